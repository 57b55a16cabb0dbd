-- Schema management and the embedded server.

-- name: embedded_database_exists
SELECT 1 FROM pg_database WHERE datname = 'etlctl';

-- name: embedded_create_database
CREATE DATABASE etlctl;

-- name: init_lock
-- One `db init` at a time per database; waits at most lock_timeout.
SELECT pg_advisory_lock(hashtext('etlctl.db_init'));

-- name: init_unlock
SELECT pg_advisory_unlock(hashtext('etlctl.db_init'));

-- name: schema_state
SELECT to_regclass('etlctl.migrations') IS NOT NULL AS has_migrations_table,
       to_regclass('tenants') IS NOT NULL AS has_tenants,
       to_regclass('integrations') IS NOT NULL AS has_integrations,
       to_regclass('etl_jobs') IS NOT NULL AS has_etl_jobs;

-- name: applied_migrations
SELECT name, applied_at FROM etlctl.migrations ORDER BY name;

-- name: record_migrations
INSERT INTO etlctl.migrations (name)
SELECT unnest(%(names)s::text[])
ON CONFLICT (name) DO NOTHING;

-- name: running_conflicts
-- Integrations with more than one RUNNING job: what blocks the one-RUNNING index.
SELECT integration_id, array_agg(id ORDER BY id) AS job_ids
FROM etl_jobs
WHERE status ->> 'overall' = 'RUNNING' AND integration_id IS NOT NULL
GROUP BY integration_id
HAVING count(*) > 1
ORDER BY integration_id;

-- name: try_tick_lock
-- At most one sweep (or schedule-next) tick per database at a time; a second one
-- returns false at once and exits quietly. Released when the session ends.
SELECT pg_try_advisory_lock(hashtext('etlctl.tick.' || %(name)s)) AS locked;

-- name: release_tick_lock
SELECT pg_advisory_unlock(hashtext('etlctl.tick.' || %(name)s)) AS released;
