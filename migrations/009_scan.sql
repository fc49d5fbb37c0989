-- The scheduled inbound scan (`outbox-relay scan`): its settings, the libraries it reads and
-- writes, the albums it staged, its runs, and the journal that makes a killed run recoverable.
-- DESIGN.md, "Scheduled inbound scan"; outbox_relay/scan/cycle.py explains the journal.

-- Admin-editable settings, read afresh before every run (and every few seconds by a waiting
-- scheduler), so an edit takes effect without a restart. Values are text, checked by the scan:
-- a bad value fails the run with an error log naming the key and the rule.
CREATE TABLE library.settings (
    key        text        PRIMARY KEY,
    value      text        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE library.settings IS
    'Runtime settings (staging_scan.*), editable in SQL; the scan re-reads them before each run.';

CREATE FUNCTION library.touch_updated_at() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE TRIGGER settings_touch BEFORE UPDATE ON library.settings
    FOR EACH ROW EXECUTE FUNCTION library.touch_updated_at();

-- The seed's keys and defaults (seeds/003_*), plus the settle time: a file modified less than
-- this many seconds ago may still be uploading and waits for the next run.
INSERT INTO library.settings (key, value) VALUES
    ('staging_scan.enabled', 'false'),
    ('staging_scan.dry_run', 'false'),
    ('staging_scan.schedule', '0 */1 * * *'),
    ('staging_scan.workers', '4'),
    ('staging_scan.rate_limit', '0'),
    ('staging_scan.scan_db_data_path', '/var/lib/outbox-relay/scan-db'),
    ('staging_scan.settle_seconds', '60');

-- Folders the scan knows. It reads the one library of type 'inbound' and stages into the one of
-- type 'staging'; none or several of either fails the run (no constraint: an operator may be
-- mid-way through an edit, and the run says what is wrong).
CREATE TABLE library.libraries (
    id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE,
    type text NOT NULL,
    path text NOT NULL,
    CONSTRAINT libraries_type_check CHECK (type IN ('inbound', 'staging', 'library')),
    CONSTRAINT libraries_path_check CHECK (path LIKE '/%')
);

COMMENT ON TABLE library.libraries IS
    'Library folders; the scan reads type inbound and stages into type staging.';

-- One row per run (scheduled or --once), written when it starts and completed when it ends; a
-- row left 'running' by a killed process is marked 'interrupted' by the next run.
CREATE TABLE library.scan_runs (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at    timestamptz,
    status         text        NOT NULL DEFAULT 'running',
    trigger        text        NOT NULL,
    dry_run        boolean     NOT NULL,
    host           text        NOT NULL,
    inbound_path   text,
    staging_path   text,
    workers        integer,
    rate_limit     double precision,
    files_total    integer     NOT NULL DEFAULT 0,
    files_skipped  integer     NOT NULL DEFAULT 0,
    files_waiting  integer     NOT NULL DEFAULT 0,
    albums_total   integer     NOT NULL DEFAULT 0,
    albums_success integer     NOT NULL DEFAULT 0,
    albums_failed  integer     NOT NULL DEFAULT 0,
    recovered      integer     NOT NULL DEFAULT 0,
    duration_ms    bigint,
    error          text,
    CONSTRAINT scan_runs_status_check
        CHECK (status IN ('running', 'success', 'partial', 'failed', 'interrupted')),
    CONSTRAINT scan_runs_trigger_check CHECK (trigger IN ('schedule', 'once'))
);

CREATE INDEX scan_runs_started_idx ON library.scan_runs (started_at DESC);

COMMENT ON TABLE library.scan_runs IS
    'One row per scan run with its summary; status running/success/partial/failed/interrupted.';

-- One row per album staged, written in the transaction that writes its library.albums row and
-- its outbox.enqueue_album row. staging_path is unique: an album is never staged twice.
CREATE TABLE library.staging_items (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    staging_path text        NOT NULL,
    status       text        NOT NULL DEFAULT 'pending_review',
    scan_id      bigint      NOT NULL REFERENCES library.scan_runs (id),
    album_key    text        NOT NULL,
    artist       text        NOT NULL,
    album        text        NOT NULL,
    year         integer,
    track_count  integer     NOT NULL,
    files        jsonb       NOT NULL,
    album_id     bigint      NOT NULL REFERENCES library.albums (id),
    outbox_id    bigint      NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT staging_items_staging_path_key UNIQUE (staging_path),
    CONSTRAINT staging_items_status_check
        CHECK (status IN ('pending_review', 'approved', 'rejected'))
);

COMMENT ON TABLE library.staging_items IS
    'Albums the inbound scan moved into staging, awaiting review (status pending_review).';

-- The scan's intent journal: written and committed before an album's first file moves, deleted
-- in the transaction that writes the album's rows. A row here means "these moves may be partly
-- done and the rows are not written": the next run finishes the moves and writes the rows.
CREATE TABLE library.scan_journal (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    scan_id      bigint      NOT NULL REFERENCES library.scan_runs (id),
    staging_path text        NOT NULL UNIQUE,
    album        jsonb       NOT NULL,
    moves        jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE library.scan_journal IS
    'Albums whose files the scan is moving; finished (rows written) by the next run after a crash.';
