-- Wake-ups only for a sleeping relay (issue 10; the argument is in docs/wakeups.md).
--
-- A transaction that calls pg_notify takes one lock for the whole cluster at commit and holds it
-- through its WAL flush (async.c, PreCommit_Notify), so notifying writers commit one at a time and
-- lose group commit: with 8 writers, waking the relay cost about half the write rate. A relay that
-- is already awake does not need the wake-up; so a relay that is draining holds an advisory lock,
-- BUSY, and writers notify only while no relay holds it. Advisory locks are not MVCC: what a
-- writer sees is the state at that instant, whatever its snapshot or isolation level.
--
-- The race to close is a writer that sees BUSY held, skips the notification, and commits just
-- after the relay stopped claiming. So writers take GATE (shared, held to commit) *before* they
-- look at BUSY, and a relay that wants to sleep releases BUSY *then* waits until it can take GATE
-- exclusively for an instant (a try-lock: it never blocks a writer, never queues), and claims once
-- more. Every writer that saw BUSY held still held GATE when BUSY was released, so it has ended
-- by the time the relay gets GATE, and the last claim sees its rows.
--
-- The keys are the two-integer form (classid, objid), a key space separate from the one-bigint
-- form applications usually use; the class is one function, so that a database whose
-- applications already use this class can move it (CREATE OR REPLACE, then restart the relays).

CREATE FUNCTION outbox.wakeup_lock_class() RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT 1869570681 $$;  -- 0x6F6F7279, "oory": outbox-relay's advisory lock class

COMMENT ON FUNCTION outbox.wakeup_lock_class() IS
    'outbox-relay: the advisory lock class of GATE (objid 1) and BUSY (objid 2); see docs/wakeups.md.';

CREATE OR REPLACE FUNCTION outbox.notify_enqueued() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    IF EXISTS (SELECT 1 FROM inserted WHERE parent_id IS NULL) THEN
        -- GATE first, held to commit: a relay that stops claiming waits for this transaction.
        PERFORM pg_advisory_xact_lock_shared(outbox.wakeup_lock_class(), 1);
        -- BUSY free: no relay is awake, so wake one. (A shared try-lock conflicts only with a
        -- relay's exclusive hold, never with other writers; it is released at once.)
        IF pg_try_advisory_lock_shared(outbox.wakeup_lock_class(), 2) THEN
            PERFORM pg_advisory_unlock_shared(outbox.wakeup_lock_class(), 2);
            PERFORM pg_notify('outbox_relay', '');
        END IF;
    END IF;
    RETURN NULL;
END;
$$;

-- A relay that claims takes BUSY (on its claiming session, for as long as it keeps claiming).
-- Only one relay holds it; the others drain beside it and sleep without ceremony, because the
-- holder sweeps before it sleeps. Returns whether this session holds BUSY now.
CREATE FUNCTION outbox.relay_awake() RETURNS boolean
    LANGUAGE sql VOLATILE AS
$$ SELECT pg_try_advisory_lock(outbox.wakeup_lock_class(), 2) $$;

-- A relay about to sleep: releases BUSY (when it holds it), then tells whether GATE is clear,
-- that is, whether every writer that saw BUSY held has ended. When it is, the relay's next claim
-- sees all their rows; when not, the relay asks again (outbox.relay_gate_clear) a moment later.
CREATE FUNCTION outbox.relay_step_down(holds_busy boolean) RETURNS boolean
    LANGUAGE plpgsql VOLATILE AS
$$
BEGIN
    IF holds_busy THEN
        PERFORM pg_advisory_unlock(outbox.wakeup_lock_class(), 2);
    END IF;
    RETURN outbox.relay_gate_clear();
END;
$$;

CREATE FUNCTION outbox.relay_gate_clear() RETURNS boolean
    LANGUAGE plpgsql VOLATILE AS
$$
BEGIN
    IF pg_try_advisory_lock(outbox.wakeup_lock_class(), 1) THEN
        PERFORM pg_advisory_unlock(outbox.wakeup_lock_class(), 1);
        RETURN true;
    END IF;
    RETURN false;
END;
$$;

-- Like every function, these are executable by PUBLIC, outbox_relay_role included.
