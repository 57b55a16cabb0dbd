-- The least-privilege role etlctl runs as: exactly what its commands need, no more.
--
--   psql "$ADMIN_DSN" -v ON_ERROR_STOP=1 -f sql/roles.sql
--   psql "$ADMIN_DSN" -c "CREATE ROLE etl_cron LOGIN IN ROLE etlctl_runner"   -- then ETLCTL_DSN=...user=etl_cron
--
-- Run it as the owner of the tables, after `etlctl db init` (it grants on the
-- objects that init creates), and again after every upgrade that adds
-- migrations: it is idempotent. `etlctl db init` itself (DDL) is run by the
-- owner, never by this role.
--
-- What it allows, and why (every UPDATE in sql/queries/*.sql was checked):
--   tenants                 SELECT: jobs are read with their tenant
--   integrations            SELECT (id, provider, active) only: what etlctl reads. Not
--                           settings or base_url, which often hold credentials.
--   integrations            UPDATE (last_updated_at) only: schedule-next locks the
--                           integrations it starts a job on (SELECT ... FOR NO KEY
--                           UPDATE), and PostgreSQL requires UPDATE on at least one
--                           column of a table to lock its rows. No query updates it.
--   etl_jobs                SELECT; UPDATE of the eight columns etlctl writes:
--                             status                complete, step, reset, sweep, wait-and-reset, schedule-next
--                             last_run_started_at   schedule-next
--                             last_run_finished_at  complete
--                             last_sync_date        complete
--                             error_message         reset, sweep, wait-and-reset (give up)
--                             retry_count           schedule-next (retrying a FAILED job)
--                             next_run              reset, sweep, wait-and-reset
--                             last_updated_at       every write
--                           Never INSERT or DELETE: jobs are created by the platform.
--   etlctl.audit            SELECT, INSERT (and its sequence): every change is audited, in the same
--                           statement as the change; history reads it. Whatever an INSERT says, the
--                           trigger audit_who (migration 0007) writes the session's user as db_user:
--                           the runner cannot write a row in another role's name.
--   etlctl.queue            SELECT, INSERT (and its sequence): schedule-next queues; UPDATE of the
--                           bookkeeping columns only: claimed_at, claimed_by, done_at (queue
--                           claim/done) and published_at, published_by, attempts, last_attempt_at,
--                           last_error, refusals, skipped_at, skip_reason (the relay): a message's
--                           body, token, step, job and queue name cannot be rewritten.
--   etlctl.runners          SELECT, INSERT (and its sequence), UPDATE of its heartbeat columns: each
--                           `etlctl run` records its start, its passes and its stop (migration 0008);
--                           doctor reads them. host and pid are never rewritten.
--   etlctl.job_kinds, etlctl.kind_steps, etlctl.step_rules, etlctl.migrations   SELECT
--   etlctl functions        EXECUTE (job_kind, idle_steps, run_steps, first_step, readable_status, ...)
-- Not granted: DDL (CREATE on any schema), DELETE or TRUNCATE anywhere, INSERT
-- into etl_jobs, writes to kinds (operators change those as the owner).
-- LISTEN/NOTIFY (watch), advisory locks (the tick locks) and pg_stat_activity
-- need no grant. CONNECT on the database is granted to PUBLIC by default; if
-- your database revokes it: GRANT CONNECT ON DATABASE <name> TO etlctl_runner.
--
-- No temporary tables, and no functions of its own. PostgreSQL cannot refuse
-- one role what PUBLIC holds, and by default PUBLIC may create temporary tables
-- (TEMPORARY on the database; temporary functions too, in pg_temp), and before
-- PostgreSQL 15 create objects in schema public. So, the first time it runs,
-- this file takes TEMPORARY on this database, and CREATE on every schema where
-- PUBLIC has it, away from PUBLIC, and grants them back by name to every other
-- role that can log in (superusers need no grant), so that nothing changes for
-- them; it also revokes them from the logins that are members of
-- etlctl_runner. Roles created afterwards get them only when granted (GRANT
-- TEMPORARY ON DATABASE <name> TO <role>), and DROP ROLE of a role it granted
-- them to needs REVOKE (or DROP OWNED BY) first. What PostgreSQL gives every
-- role regardless, and this file cannot take away: calling functions EXECUTE-able
-- by PUBLIC (built-ins such as pg_sleep), large objects (lo_create), LISTEN and
-- NOTIFY on any channel, advisory locks, and SET of its own session settings.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'etlctl_runner') THEN
        CREATE ROLE etlctl_runner NOLOGIN;
    END IF;
END
$$;

-- Start from nothing on etlctl's tables, so that rerunning this file after a
-- change here also takes away what is no longer granted.
REVOKE ALL ON tenants, integrations, etl_jobs FROM etlctl_runner;
REVOKE ALL ON ALL TABLES IN SCHEMA etlctl FROM etlctl_runner;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA etlctl FROM etlctl_runner;

GRANT USAGE ON SCHEMA etlctl TO etlctl_runner;

GRANT SELECT ON tenants TO etlctl_runner;
GRANT SELECT (id, provider, active) ON integrations TO etlctl_runner;
GRANT UPDATE (last_updated_at) ON integrations TO etlctl_runner;

GRANT SELECT ON etl_jobs TO etlctl_runner;
GRANT UPDATE (status, last_run_started_at, last_run_finished_at, last_sync_date, error_message, retry_count,
              next_run, last_updated_at) ON etl_jobs TO etlctl_runner;

GRANT SELECT, INSERT ON etlctl.audit TO etlctl_runner;
GRANT SELECT, INSERT ON etlctl.queue TO etlctl_runner;
GRANT UPDATE (claimed_at, claimed_by, done_at, published_at, published_by, attempts, last_attempt_at,
              last_error, refusals, skipped_at, skip_reason) ON etlctl.queue TO etlctl_runner;
GRANT SELECT, INSERT ON etlctl.runners TO etlctl_runner;
GRANT UPDATE (started_at, last_pass_at, passes, max_sleep, stopped_at) ON etlctl.runners TO etlctl_runner;
GRANT USAGE ON SEQUENCE etlctl.audit_id_seq, etlctl.queue_id_seq, etlctl.runners_id_seq TO etlctl_runner;
GRANT SELECT ON etlctl.job_kinds, etlctl.kind_steps, etlctl.step_rules, etlctl.migrations TO etlctl_runner;

GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA etlctl TO etlctl_runner;

-- No temporary tables or functions, no objects in any schema (see the top of this file).
DO $$
DECLARE
    db text := current_database();
    grantee record;
    schema_name text;
BEGIN
    -- Logins that can use what PUBLIC loses: every login but the runner's own and superusers.
    IF has_database_privilege('public', db, 'TEMPORARY') THEN
        FOR grantee IN SELECT rolname FROM pg_roles
                       WHERE rolcanlogin AND NOT rolsuper AND rolname !~ '^pg_'
                         AND NOT pg_has_role(oid, 'etlctl_runner', 'MEMBER') LOOP
            EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO %I', db, grantee.rolname);
        END LOOP;
        EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', db);
    END IF;
    FOR schema_name IN SELECT nspname FROM pg_namespace
                       WHERE has_schema_privilege('public', oid, 'CREATE') LOOP
        FOR grantee IN SELECT rolname FROM pg_roles
                       WHERE rolcanlogin AND NOT rolsuper AND rolname !~ '^pg_'
                         AND NOT pg_has_role(oid, 'etlctl_runner', 'MEMBER') LOOP
            EXECUTE format('GRANT CREATE ON SCHEMA %I TO %I', schema_name, grantee.rolname);
        END LOOP;
        EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM PUBLIC', schema_name);
    END LOOP;
    -- And nothing of the kind for the runner's logins, granted to them by name earlier.
    FOR grantee IN SELECT rolname FROM pg_roles
                   WHERE rolname = 'etlctl_runner' OR (pg_has_role(oid, 'etlctl_runner', 'MEMBER') AND NOT rolsuper) LOOP
        EXECUTE format('REVOKE TEMPORARY, CREATE ON DATABASE %I FROM %I', db, grantee.rolname);
        FOR schema_name IN SELECT nspname FROM pg_namespace WHERE has_schema_privilege(grantee.rolname, oid, 'CREATE') LOOP
            EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM %I', schema_name, grantee.rolname);
        END LOOP;
    END LOOP;
END
$$;
