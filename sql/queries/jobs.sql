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
-- A job as etlctl.core.job.Job reads it: its row, its kind and that kind's
-- steps (NULL kind_steps: the kind is unknown), the completion rules of the
-- steps of its document and its kind (step_rules: only those with a row; any
-- other step must finish), its tenant and integration, etlctl's latest write
-- to it (its audit), and the clock. Included by job_detail, sweep_batch,
-- oncall_jobs and watch_in_flight, which add their WHERE clause.
SELECT j.id, j.job_name, j.tenant_id, t.name AS tenant_name, coalesce(t.tier, 'premium') AS tenant_tier,
       j.integration_id, i.provider, k.kind,
       CASE WHEN k.kind IS NOT NULL THEN coalesce((
           SELECT jsonb_agg(jsonb_build_object('step', s.step, 'position', s.position,
                                               'display_name', s.display_name, 'chain', s.chain)
                            ORDER BY s.position)
           FROM etlctl.kind_steps s WHERE s.kind = k.kind), '[]') END AS kind_steps,
       (SELECT jsonb_object_agg(r.step, r.rule) FROM etlctl.step_rules r
        WHERE r.step IN (SELECT jsonb_object_keys(CASE WHEN jsonb_typeof(j.status -> 'steps') = 'object'
                                                       THEN j.status -> 'steps' ELSE '{}' END)
                         UNION ALL
                         SELECT s.step FROM etlctl.kind_steps s WHERE s.kind = k.kind)) AS step_rules,
       -- The document as etlctl reads it: bounded in size and nesting (etlctl.readable_status);
       -- `unread` lists the parts left out, which etlctl.core.document marks where they were.
       readable.status, readable.unread,
       -- The fingerprints a reset or give-up is guarded on (apply_transitions): the steps, and,
       -- for a forced reset of a document etlctl cannot wholly read, all of it.
       md5((j.status -> 'steps')::text) AS steps_digest,
       md5(j.status::text) AS status_digest,
       j.next_run::timestamptz AS next_run,
       -- When schedule-next retries a FAILED job: the due rule itself (its next_run is stale then).
       CASE WHEN j.status ->> 'overall' = 'FAILED' THEN (
-- include: _due_at
       )::timestamptz END AS retry_at,
       j.schedule_interval_minutes, j.retry_interval_minutes, j.retry_count,
       j.last_sync_date::timestamptz AS last_sync_date,
       j.last_run_started_at::timestamptz AS last_run_started_at,
       j.last_run_finished_at::timestamptz AS last_run_finished_at,
       j.last_updated_at::timestamptz AS last_updated_at,
       j.error_message, j.active, i.active AS integration_active, t.active AS tenant_active,
       -- etlctl's latest write to the job: when it is as new as last_updated_at, the last update was etlctl's.
       last_audit.at AS last_audit_at, last_audit.command AS last_audit_command,
       coalesce(%(now)s::timestamptz, now()) AS now
FROM etl_jobs j
LEFT JOIN tenants t ON t.id = j.tenant_id
LEFT JOIN integrations i ON i.id = j.integration_id
CROSS JOIN LATERAL (SELECT etlctl.job_kind(j.job_name, i.provider) AS kind) k
CROSS JOIN LATERAL etlctl.readable_status(j.status) readable
LEFT JOIN LATERAL (
    SELECT a.at, a.command FROM etlctl.audit a WHERE a.job_id = j.id ORDER BY a.at DESC, a.id DESC LIMIT 1
) last_audit ON true

-- name: job_detail
-- One job (see job_row).
-- include: job_row
WHERE j.id = %(job_id)s;

-- name: jobs_overview
-- Every job (or one tenant's), for `etlctl status`, at most %(limit)s rows (ask one more to know there are more).
SELECT j.id, j.tenant_id, t.name AS tenant_name, j.job_name, j.integration_id,
       etlctl.job_kind(j.job_name, i.provider) AS kind,
       -- RATE_LIMITED, the existing workers' spelling, reads as RATE_LIMIT_REACHED.
       CASE j.status ->> 'overall' WHEN 'RATE_LIMITED' THEN 'RATE_LIMIT_REACHED' ELSE j.status ->> 'overall' END AS overall,
       j.status ->> 'reset_stage' AS reset_stage,
       j.next_run::timestamptz AS next_run,
       -- When schedule-next retries a FAILED job: the due rule itself (its next_run is stale then).
       CASE WHEN j.status ->> 'overall' = 'FAILED' THEN (
-- include: _due_at
       )::timestamptz END AS retry_at,
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
-- Each kind with its message and its steps in order, each step with its rule
-- (etlctl.step_rules; 'finished' without a row) and whether schedule-next chains it.
SELECT k.name AS kind, k.description, k.message_provider, k.message_extra,
       coalesce(jsonb_agg(jsonb_build_object('step', s.step, 'position', s.position,
                                             'display_name', s.display_name,
                                             'rule', coalesce(r.rule, 'finished'), 'chain', s.chain)
                          ORDER BY s.position) FILTER (WHERE s.step IS NOT NULL), '[]') AS steps
FROM etlctl.job_kinds k
LEFT JOIN etlctl.kind_steps s ON s.kind = k.name
LEFT JOIN etlctl.step_rules r ON r.step = s.step
GROUP BY k.name, k.description, k.message_provider, k.message_extra
ORDER BY k.name;

-- name: tenant_exists
-- Whether a tenant (id or name) exists: an unknown --tenant is an error, not an empty list.
SELECT EXISTS (SELECT 1 FROM tenants t WHERE t.id::text = %(tenant)s OR lower(t.name) = lower(%(tenant)s)) AS found;

-- name: tenant_ids
-- The ids of the tenants that --tenant names (an id, or a name, case-insensitively);
-- NULL when there is none.
SELECT array_agg(t.id ORDER BY t.id) AS ids
FROM tenants t
WHERE t.id::text = %(tenant)s OR lower(t.name) = lower(%(tenant)s);

-- name: complete_jobs
-- Shell completion of JOB: the ids that start with %(prefix)s, then the job names
-- that do (case-insensitively), of one tenant (id or name) when %(tenant)s is given;
-- at most 50 of each.
(SELECT j.id::text AS value, j.job_name || ', tenant ' || coalesce(t.name, j.tenant_id::text) AS help
 FROM etl_jobs j
 LEFT JOIN tenants t ON t.id = j.tenant_id
 WHERE starts_with(j.id::text, %(prefix)s)
   AND (%(tenant)s::text IS NULL OR j.tenant_id::text = %(tenant)s OR lower(t.name) = lower(%(tenant)s))
 ORDER BY j.id
 LIMIT 50)
UNION ALL
(SELECT j.job_name AS value, 'job name' AS help
 FROM etl_jobs j
 LEFT JOIN tenants t ON t.id = j.tenant_id
 WHERE starts_with(lower(j.job_name), lower(%(prefix)s))
   AND (%(tenant)s::text IS NULL OR j.tenant_id::text = %(tenant)s OR lower(t.name) = lower(%(tenant)s))
 GROUP BY j.job_name
 ORDER BY j.job_name
 LIMIT 50);

-- name: complete_tenants
-- Shell completion of --tenant: the names that start with %(prefix)s (case-insensitively),
-- then the ids that do; at most 50 of each.
(SELECT t.name AS value, 'tenant ' || t.id AS help
 FROM tenants t
 WHERE starts_with(lower(t.name), lower(%(prefix)s))
 ORDER BY t.name
 LIMIT 50)
UNION ALL
(SELECT t.id::text AS value, t.name AS help
 FROM tenants t
 WHERE starts_with(t.id::text, %(prefix)s)
 ORDER BY t.id
 LIMIT 50);
