-- `etlctl demo`: its own database on the embedded server, never the user's.

-- name: demo_drop_database
DROP DATABASE IF EXISTS etlctl_demo WITH (FORCE);

-- name: demo_create_database
CREATE DATABASE etlctl_demo;

-- name: demo_seed
-- A demo tenant with a Jira and a GitHub integration and one job each, due now,
-- rescheduled one minute after each reset (the shortest interval the column holds).
-- Its tier is etlctl_demo: with a broker configured, its messages go to
-- extraction_queue_etlctl_demo, which no real worker consumes.
-- The demo's simulated worker does not chain steps as the real workers do, so
-- its database opts every step into schedule-next's chaining (kind_steps.chain).
WITH chained AS (
    UPDATE etlctl.kind_steps SET chain = true WHERE kind IN ('jira', 'github') RETURNING 1
),
tenant AS (
    INSERT INTO tenants (name, tier) VALUES ('demo', 'etlctl_demo') RETURNING id
),
jira AS (
    INSERT INTO integrations (provider, type, base_url, tenant_id)
    SELECT 'Jira', 'Data', 'https://demo.atlassian.net', id FROM tenant RETURNING id, tenant_id
),
github AS (
    INSERT INTO integrations (provider, type, base_url, tenant_id)
    SELECT 'GitHub', 'Data', 'https://github.com/demo', id FROM tenant RETURNING id, tenant_id
)
INSERT INTO etl_jobs (job_name, tenant_id, integration_id, schedule_interval_minutes, next_run)
SELECT 'Jira', tenant_id, id, 1, NULL::timestamp FROM jira
UNION ALL
SELECT 'GitHub', tenant_id, id, 1, NULL::timestamp FROM github
RETURNING id, job_name;
