-- Retention deletes finished rows oldest first in small batches; this index finds them without
-- touching pending rows, and stays small relative to the work because it is walked in order.
CREATE INDEX messages_finished_idx ON outbox.messages (processed_at)
    WHERE status IN ('published', 'skipped', 'fanned_out');

-- "The history of one ISRC" is the first question an operator asks; answer it without a scan.
CREATE INDEX messages_isrc_idx ON outbox.messages (upper(btrim(isrc))) WHERE isrc IS NOT NULL;
