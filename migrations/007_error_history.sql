-- Every error a row met, kept apart from last_error, so that last_error is only ever current.
--
-- Before this, a row kept its last_error after it was requeued and published, and a row that
-- was rejected once and then accepted showed the rejection beside status 'published', as if
-- it still applied. From now on:
--   - each rejection charged to a row appends {"at", "attempt", "error"} to error_history and
--     sets last_error (outbox.dead_letters shows both);
--   - last_error is set only while it is current: a dead row, or a pending row waiting to be
--     retried after a rejection. Publishing or skipping the row clears it, and so does
--     requeueing a dead letter (`outbox-relay requeue`): the errors stay in error_history.
--
-- A column of outbox.messages rather than a table: the relay's role (004) may already update
-- the row, and retention deletes a row's history with the row.
ALTER TABLE outbox.messages
    ADD COLUMN error_history jsonb NOT NULL DEFAULT '[]'::jsonb;

COMMENT ON COLUMN outbox.messages.error_history IS
    'Every error charged to the row, oldest first: [{"at", "attempt", "error"}]; last_error is the current one, if any.';

-- Rows that met errors before this migration: their last error becomes their history (its
-- time is unknown when the row never finished: "at" is null), and it stays in last_error only
-- where it is still current. One pass over the rows that have an error at all.
UPDATE outbox.messages
SET error_history = jsonb_build_array(
        jsonb_build_object('at', processed_at, 'attempt', attempts, 'error', last_error)),
    last_error    = CASE
                        WHEN status = 'dead' OR (status = 'pending' AND attempts > 0)
                            THEN last_error
                    END
WHERE last_error IS NOT NULL;

-- The dead letters with their whole history (a new last column: the view's other columns are
-- unchanged, so what reads it keeps working).
CREATE OR REPLACE VIEW outbox.dead_letters AS
SELECT id, kind, parent_id, isrc, title, artist, album, attempts, last_error, event_id,
       created_at, processed_at, error_history
FROM outbox.messages
WHERE status = 'dead'
ORDER BY id;

COMMENT ON VIEW outbox.dead_letters IS
    'Rows Inngest rejected too often, with every error they met; requeue them once the cause is fixed.';
