-- on-conflict-report: running_conflicts
-- At most one RUNNING job per integration (the flow document's rule), enforced
-- by the database. Jobs without an integration are not constrained here.
-- On a database whose rows already break the rule this migration fails alone:
-- `db init` lists the offending jobs, applies everything else and exits 4.
CREATE UNIQUE INDEX IF NOT EXISTS etlctl_one_running_per_integration
    ON etl_jobs (integration_id)
    WHERE (status ->> 'overall') = 'RUNNING';
