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
--   etlctl.audit            SELECT, INSERT (and its sequence): every change is audited; history reads it
--   etlctl.queue            SELECT, INSERT, UPDATE (and its sequence): schedule-next queues, queue claim/done
--   etlctl.job_kinds, etlctl.kind_steps, etlctl.step_rules, etlctl.migrations   SELECT
--   etlctl functions        EXECUTE (job_kind, idle_steps, run_steps, first_step, ...)
-- Not granted: DDL (CREATE on any schema), DELETE or TRUNCATE anywhere, INSERT
-- into etl_jobs, writes to kinds (operators change those as the owner).
-- LISTEN/NOTIFY (watch), advisory locks (the tick locks) and pg_stat_activity
-- need no grant. CONNECT on the database is granted to PUBLIC by default; if
-- your database revokes it: GRANT CONNECT ON DATABASE <name> TO etlctl_runner.

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
GRANT SELECT, INSERT, UPDATE ON etlctl.queue TO etlctl_runner;
GRANT USAGE ON SEQUENCE etlctl.audit_id_seq, etlctl.queue_id_seq TO etlctl_runner;
GRANT SELECT ON etlctl.job_kinds, etlctl.kind_steps, etlctl.step_rules, etlctl.migrations TO etlctl_runner;

GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA etlctl TO etlctl_runner;
