-- When a job may start again (the scheduler's due rule), and the indexes the
-- scheduler and the sweep need.

-- The time from which a job is due, in the naive zone of the table, or NULL when
-- its state never makes it due (RUNNING, FINISHED, or an unknown value):
--   READY, RATE_LIMIT_REACHED  next_run (NULL: due now)
--   FAILED                     retry_interval_minutes after the run's latest
--                              start, finish or update
-- IMMUTABLE (it reads only its arguments) so that an index can hold it.
CREATE OR REPLACE FUNCTION etlctl.due_at(
    overall text, next_run timestamp, started timestamp, finished timestamp, updated timestamp, retry_minutes integer
) RETURNS timestamp
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE overall
        WHEN 'READY' THEN coalesce(next_run, '-infinity')
        WHEN 'RATE_LIMIT_REACHED' THEN coalesce(next_run, '-infinity')
        WHEN 'FAILED' THEN coalesce(greatest(started, finished, updated), '-infinity')
                           + make_interval(mins => greatest(coalesce(retry_minutes, 0), 0))
    END
$$;

-- Due jobs, earliest first: a range scan finds the few due among many.
CREATE INDEX IF NOT EXISTS etlctl_jobs_due ON etl_jobs (
    etlctl.due_at(status ->> 'overall', next_run, last_run_started_at, last_run_finished_at,
                  last_updated_at, retry_interval_minutes)
) WHERE (status ->> 'overall') IN ('READY', 'FAILED', 'RATE_LIMIT_REACHED');

-- Jobs in flight (RUNNING, or FINISHED and not yet reset), by integration: what
-- keeps an integration busy, and what the sweep walks.
CREATE INDEX IF NOT EXISTS etlctl_jobs_in_flight ON etl_jobs (integration_id, id)
    WHERE (status ->> 'overall') IN ('RUNNING', 'FINISHED');

-- True when a step's three phases all hold `value`.
CREATE OR REPLACE FUNCTION etlctl.phases_are(step jsonb, value text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(step ->> 'extraction' = value AND step ->> 'transform' = value
                    AND step ->> 'embedding' = value, false)
$$;

-- The step a new run starts with: the kind's first step; for a job of unknown
-- kind, the first step of its document by its "order" key, then name.
CREATE OR REPLACE FUNCTION etlctl.first_step(steps jsonb, kind text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN kind IS NOT NULL THEN
        (SELECT s.step FROM etlctl.kind_steps s WHERE s.kind = first_step.kind ORDER BY s.position LIMIT 1)
    WHEN jsonb_typeof(steps) = 'object' THEN
        (SELECT e.key FROM jsonb_each(steps) e
         ORDER BY CASE WHEN jsonb_typeof(e.value -> 'order') = 'number' THEN (e.value -> 'order')::numeric END
                  NULLS LAST, e.key
         LIMIT 1)
    END
$$;
