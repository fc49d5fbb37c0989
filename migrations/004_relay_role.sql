-- A database role with exactly what the relay needs, and nothing of the application's data.
--
-- Deployments log the relay in as a role that is a member of outbox_relay_role:
--
--     CREATE ROLE outbox_relay LOGIN PASSWORD '...' IN ROLE outbox_relay_role;
--
-- Such a relay can claim, publish, fan out and clean up outbox rows, and is refused everything
-- else: it cannot read or change library.* (or any other schema of the application), cannot
-- change the schema, and cannot rewrite the migrations' record. Migrations themselves are run
-- by the schema's owner, not by this role.
--
-- Roles are cluster-wide while migrations run per database: the role is created only when no
-- database of the cluster has created it yet. Two databases migrating at the same instant may
-- both see it missing; the loser's CREATE fails with duplicate_object (or a unique violation
-- on pg_authid) and is ignored, since the role it wanted now exists. Creating a role needs the
-- CREATEROLE attribute; a migrating user without it has the role created once by an admin
-- beforehand, and then this block does nothing. The GRANTs below are per database and always run.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'outbox_relay_role') THEN
        BEGIN
            CREATE ROLE outbox_relay_role NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL;
        END;
    END IF;
END;
$$;

COMMENT ON ROLE outbox_relay_role IS
    'outbox-relay: may only touch outbox.messages (see migrations/004_relay_role.sql).';

-- To name anything in the schema at all. Not CREATE: the relay never changes the schema.
GRANT USAGE ON SCHEMA outbox TO outbox_relay_role;

-- SELECT: the claim reads the rows it picks and returns them; the gauges count pending and
--         dead rows.
-- UPDATE: the claim writes the lease (claim_token, claimed_by, next_attempt_at) and takes
--         row locks with FOR UPDATE SKIP LOCKED, which needs UPDATE; finish records outcomes;
--         requeueing dead letters sets them pending again.
-- INSERT: the claim fans an album row out into one track row per track. The id column is an
--         identity column, whose sequence needs no grant of its own; the NOTIFY trigger runs
--         pg_notify, which every role may call.
-- DELETE: retention removes finished rows (published, skipped, fanned out) after their time.
GRANT SELECT, INSERT, UPDATE, DELETE ON outbox.messages TO outbox_relay_role;

-- `outbox-relay status` (and operators' tools run with the relay's credentials) read these
-- views; they show nothing that SELECT on outbox.messages does not already show.
GRANT SELECT ON outbox.summary, outbox.dead_letters TO outbox_relay_role;

-- Not granted, on purpose:
-- - EXECUTE on outbox.enqueue_*: applications enqueue, the relay does not. (Functions are
--   executable by PUBLIC by default; they only insert into outbox.messages, which this role
--   may do anyway.)
-- - anything on outbox.schema_migrations: the relay never migrates.
-- - anything on library.* or other schemas: the relay never reads the application's data.
-- - pg_stat_user_tables needs no grant: every role may read it (the dead-tuples gauge).
