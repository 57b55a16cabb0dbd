-- Reading jobs. Naive timestamp columns are cast to timestamptz, which reads
-- them in the session TimeZone (the configured --db-timezone).

-- name: find_jobs
-- Jobs whose id or name (case-insensitively) is %(ref)s, optionally in one tenant (id or name).
SELECT j.id, j.job_name, j.tenant_id, t.name AS tenant_name
FROM etl_jobs j
LEFT JOIN tenants t ON t.id = j.tenant_id
WHERE (lower(j.job_name) = lower(%(ref)s) OR (%(ref_is_id)s AND j.id::text = %(ref)s))
  AND (%(tenant)s::text IS NULL OR j.tenant_id::text = %(tenant)s OR lower(t.name) = lower(%(tenant)s))
ORDER BY j.id
LIMIT 20;

-- name: job_row
-- A job as etlctl.jobs.Job reads it: its row, its kind and that kind's step
-- rules (NULL kind_steps: the kind is unknown), its tenant and integration, the
-- time of etlctl's latest write to it, and the clock. Included by job_detail,
-- sweep_batch and oncall_jobs, which add their WHERE clause.
SELECT j.id, j.job_name, j.tenant_id, t.name AS tenant_name, j.integration_id, i.provider,
       k.kind,
       CASE WHEN k.kind IS NOT NULL THEN coalesce((
           SELECT jsonb_agg(jsonb_build_object('step', s.step, 'position', s.position,
                                               'display_name', s.display_name, 'rule', s.rule)
                            ORDER BY s.position)
           FROM etlctl.kind_steps s WHERE s.kind = k.kind), '[]') END AS kind_steps,
       j.status,
       -- The fingerprint a reset or give-up is guarded on (apply_transitions).
       md5((j.status -> 'steps')::text) AS steps_digest,
       j.next_run::timestamptz AS next_run,
       j.schedule_interval_minutes, j.retry_interval_minutes, j.retry_count,
       j.last_sync_date::timestamptz AS last_sync_date,
       j.last_run_started_at::timestamptz AS last_run_started_at,
       j.last_run_finished_at::timestamptz AS last_run_finished_at,
       j.last_updated_at::timestamptz AS last_updated_at,
       j.error_message, j.active, i.active AS integration_active, t.active AS tenant_active,
       -- etlctl's latest write to the job: when it is as new as last_updated_at, the last update was etlctl's.
       (SELECT max(a.at) FROM etlctl.audit a WHERE a.job_id = j.id) AS last_audit_at,
       coalesce(%(now)s::timestamptz, now()) AS now
FROM etl_jobs j
LEFT JOIN tenants t ON t.id = j.tenant_id
LEFT JOIN integrations i ON i.id = j.integration_id
CROSS JOIN LATERAL (SELECT etlctl.job_kind(j.job_name, i.provider) AS kind) k

-- name: job_detail
-- One job (see job_row).
-- include: job_row
WHERE j.id = %(job_id)s;

-- name: jobs_overview
-- Every job (or one tenant's), for `etlctl status`, at most %(limit)s rows (ask one more to know there are more).
SELECT j.id, j.tenant_id, t.name AS tenant_name, j.job_name, j.integration_id,
       etlctl.job_kind(j.job_name, i.provider) AS kind,
       j.status ->> 'overall' AS overall,
       j.status ->> 'reset_stage' AS reset_stage,
       j.next_run::timestamptz AS next_run,
       j.active, i.active AS integration_active, t.active AS tenant_active,
       j.last_run_finished_at::timestamptz AS last_run_finished_at,
       j.error_message,
       coalesce(%(now)s::timestamptz, now()) AS now
FROM etl_jobs j
LEFT JOIN tenants t ON t.id = j.tenant_id
LEFT JOIN integrations i ON i.id = j.integration_id
WHERE (%(tenant)s::text IS NULL OR j.tenant_id::text = %(tenant)s OR lower(t.name) = lower(%(tenant)s))
ORDER BY j.tenant_id, j.id
LIMIT %(limit)s;

-- name: kinds_list
SELECT k.name AS kind, k.description,
       coalesce(jsonb_agg(jsonb_build_object('step', s.step, 'position', s.position,
                                             'display_name', s.display_name, 'rule', s.rule)
                          ORDER BY s.position) FILTER (WHERE s.step IS NOT NULL), '[]') AS steps
FROM etlctl.job_kinds k
LEFT JOIN etlctl.kind_steps s ON s.kind = k.name
GROUP BY k.name, k.description
ORDER BY k.name;

-- name: tenant_exists
-- Whether a tenant (id or name) exists: an unknown --tenant is an error, not an empty list.
SELECT EXISTS (SELECT 1 FROM tenants t WHERE t.id::text = %(tenant)s OR lower(t.name) = lower(%(tenant)s)) AS found;
