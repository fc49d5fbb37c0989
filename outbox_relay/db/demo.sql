-- What `outbox-relay demo` shows of the outbox (outbox_relay.cli.demo).

-- name: demo_skipped_tracks
SELECT id, coalesce(isrc, '-') AS isrc, title, skip_reason
FROM outbox.messages
WHERE status = 'skipped' AND kind = 'track'
ORDER BY id;

-- name: demo_summary
SELECT status, count, oldest_age FROM outbox.summary;

-- name: demo_pending_count
SELECT count(*) FROM outbox.messages WHERE status = 'pending';
