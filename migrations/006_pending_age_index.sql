-- The age of the oldest pending row without reading every pending row.
--
-- The relay refreshes its gauges every OUTBOX_REFRESH_INTERVAL. `min(created_at)` over pending
-- rows had no index to walk: with a large backlog the planner read the whole table (in parallel,
-- taking every core from the drain): 0.6 s a refresh with 1M pending and 1M done rows. With
-- this index it is one index probe, and the pending count an index-only scan of this small
-- index (0.1 s for 1M pending rows; the relay's maintenance session also runs without parallel
-- workers). It costs one more index entry per enqueue and per claim.
--
-- CREATE INDEX (not CONCURRENTLY, which cannot run inside the migration's transaction) blocks
-- writes to outbox.messages while it builds: on a table holding a large backlog, create it
-- CONCURRENTLY by hand first, with this name and definition, and the migration skips it.
--
-- `created_at IS NOT NULL` is always true (the column is NOT NULL) but PostgreSQL does not use
-- that to match partial indexes: the claim's WHERE clause does not imply this predicate, so the
-- claim can never pick this index (sorting every pending row, where messages_claim_idx hands
-- them over in order). The gauges spell the predicate out to use it.
CREATE INDEX IF NOT EXISTS messages_pending_created_idx
    ON outbox.messages (created_at) WHERE status = 'pending' AND created_at IS NOT NULL;
