-- The existing system's contract (existing-system-contract.md): its completion
-- rule, its seeded kinds and first messages, and nothing on etl_jobs that a
-- writer role could not execute. What this migration does to an install:
--
-- 1. Completion rules move from kind_steps.rule to etlctl.step_rules, by step
--    name. A rule an operator set (one that differs from what 0001 seeded) is
--    kept; where kinds disagreed on a step, the stricter 'finished' wins. Then
--    the contract's all-finished-or-all-idle steps are added unless a row for
--    them already exists. kind_steps.rule is dropped.
-- 2. kind_steps.chain (schedule-next queues a later step only where it is on):
--    off everywhere, since the existing workers chain their own steps.
-- 3. The kinds 0001 seeded are brought to the contract's steps (Jira gets
--    jira_sprint_reports and the contract's display names) only while their
--    steps are exactly as 0001 seeded them. A kind an operator changed is left
--    as it is: compare `etlctl kinds` with the README and change it by hand.
--    WEX Fabric and WEX AD are added (unless they exist), with no message.
-- 4. job_kinds.message_provider and message_extra: the first message's shape,
--    set for jira and github. Any other kind gets none, so its jobs are no
--    longer started: the real extraction router accepts only jira and github.
-- 5. etlctl.queue.queue_name.
-- 6. The due index and statistics on etl_jobs are rebuilt with built-in
--    functions only, and etlctl.due_at() is dropped: every write to etl_jobs
--    evaluates the index expression as the writing role, and a hardened setup
--    (EXECUTE revoked from PUBLIC) refused the existing system's own writes.
--    Rebuilding the index takes a lock that holds writes to etl_jobs for its
--    duration (about a second per million jobs).

-- 1. Per-step completion rules.
CREATE TABLE IF NOT EXISTS etlctl.step_rules (
    step text PRIMARY KEY CHECK (step <> ''),
    rule text NOT NULL CHECK (rule IN ('finished', 'finished_or_idle'))
);

CREATE TEMPORARY TABLE seeded_0001 (kind text, position integer, step text, display_name text, rule text)
    ON COMMIT DROP;
INSERT INTO seeded_0001 VALUES
    ('jira', 1, 'jira_projects_and_issue_types', 'Projects & Issue Types', 'finished'),
    ('jira', 2, 'jira_statuses_and_relationships', 'Statuses & Relationships', 'finished'),
    ('jira', 3, 'jira_issues_with_changelogs', 'Issues & Changelogs', 'finished'),
    ('jira', 4, 'jira_dev_status', 'Dev Status', 'finished'),
    ('github', 1, 'github_repositories', 'Repositories', 'finished'),
    ('github', 2, 'github_prs_commits_reviews_comments', 'PRs, Commits, Reviews & Comments', 'finished_or_idle');

-- An operator's choice: a rule that differs from the seed of its (kind, step); a
-- plain 'finished' on an operator's own step says nothing a missing row does not.
INSERT INTO etlctl.step_rules (step, rule)
SELECT s.step, CASE WHEN bool_and(s.rule = 'finished_or_idle') THEN 'finished_or_idle' ELSE 'finished' END
FROM etlctl.kind_steps s
LEFT JOIN seeded_0001 d ON d.kind = s.kind AND d.step = s.step
WHERE s.rule IS DISTINCT FROM d.rule
  AND (s.rule <> 'finished' OR d.rule IS NOT NULL)
GROUP BY s.step
ON CONFLICT (step) DO NOTHING;

INSERT INTO etlctl.step_rules (step, rule) VALUES
    ('jira_dev_status', 'finished_or_idle'),
    ('github_commits', 'finished_or_idle'),
    ('github_reviews', 'finished_or_idle'),
    ('github_pull_requests', 'finished_or_idle'),
    ('github_prs_commits_reviews_comments', 'finished_or_idle')
ON CONFLICT (step) DO NOTHING;

ALTER TABLE etlctl.kind_steps DROP COLUMN IF EXISTS rule;

-- 2. Chaining is opt-in per step.
ALTER TABLE etlctl.kind_steps ADD COLUMN IF NOT EXISTS chain boolean NOT NULL DEFAULT false;

-- 3. The seeded kinds, to the contract's steps, where nobody changed them.
CREATE TEMPORARY TABLE untouched_0001 ON COMMIT DROP AS
SELECT k.name AS kind
FROM etlctl.job_kinds k
WHERE k.name IN ('jira', 'github')
  AND NOT EXISTS (
      (SELECT position, step, display_name FROM etlctl.kind_steps WHERE kind = k.name
       EXCEPT SELECT position, step, display_name FROM seeded_0001 WHERE kind = k.name)
      UNION ALL
      (SELECT position, step, display_name FROM seeded_0001 WHERE kind = k.name
       EXCEPT SELECT position, step, display_name FROM etlctl.kind_steps WHERE kind = k.name));

UPDATE etlctl.kind_steps s SET display_name = v.display_name
FROM (VALUES
    ('jira', 'jira_projects_and_issue_types', 'Projects & Types'),
    ('jira', 'jira_statuses_and_relationships', 'Statuses & Relations'),
    ('jira', 'jira_dev_status', 'Development Status')
) AS v (kind, step, display_name)
WHERE s.kind = v.kind AND s.step = v.step
  AND s.kind IN (SELECT kind FROM untouched_0001);

INSERT INTO etlctl.kind_steps (kind, position, step, display_name)
SELECT 'jira', 5, 'jira_sprint_reports', 'Sprint Reports'
WHERE 'jira' IN (SELECT kind FROM untouched_0001);

UPDATE etlctl.job_kinds SET description = 'Jira: five steps; jira_dev_status may stay idle (no issues extracted)'
WHERE name = 'jira' AND description = 'Jira: all four steps must finish';

-- 4. The first message of a run, as data of the kind.
ALTER TABLE etlctl.job_kinds
    ADD COLUMN IF NOT EXISTS message_provider text CHECK (message_provider <> ''),
    ADD COLUMN IF NOT EXISTS message_extra jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(message_extra) = 'object');

UPDATE etlctl.job_kinds SET message_provider = 'jira' WHERE name = 'jira' AND message_provider IS NULL;
UPDATE etlctl.job_kinds SET message_provider = 'github', message_extra = '{"first_item": true, "last_item": false}'
WHERE name = 'github' AND message_provider IS NULL;

INSERT INTO etlctl.job_kinds (name, description) VALUES
    ('wex fabric', 'WEX Fabric: one step; no worker takes it yet, so it defines no message'),
    ('wex ad', 'WEX AD: one step; no worker takes it yet, so it defines no message')
ON CONFLICT (name) DO NOTHING;

INSERT INTO etlctl.kind_steps (kind, position, step, display_name)
SELECT v.kind, v.position, v.step, v.display_name
FROM (VALUES
    ('wex fabric', 1, 'wex_fabric_data', 'Fabric Data'),
    ('wex ad', 1, 'wex_ad_users', 'AD Users')
) AS v (kind, position, step, display_name)
WHERE NOT EXISTS (SELECT 1 FROM etlctl.kind_steps s WHERE s.kind = v.kind);

-- 5. Where a message goes.
ALTER TABLE etlctl.queue ADD COLUMN IF NOT EXISTS queue_name text;

-- 6. The due index and statistics, with built-in functions only (see sql/schema.sql).
DROP STATISTICS IF EXISTS etlctl.etl_jobs_due_stats;
DROP INDEX IF EXISTS etlctl_jobs_due;
DROP FUNCTION IF EXISTS etlctl.due_at(text, timestamp, timestamp, timestamp, timestamp, integer);

CREATE INDEX IF NOT EXISTS etlctl_jobs_due ON etl_jobs ((
    CASE status ->> 'overall'
        WHEN 'READY' THEN coalesce(next_run, '-infinity')
        WHEN 'RATE_LIMIT_REACHED' THEN coalesce(next_run, '-infinity')
        WHEN 'RATE_LIMITED' THEN coalesce(next_run, '-infinity')
        WHEN 'FAILED' THEN coalesce(greatest(last_run_started_at, last_run_finished_at, last_updated_at), '-infinity')
                           + make_interval(mins => greatest(coalesce(retry_interval_minutes, 0), 0))
    END
)) WHERE (status ->> 'overall') IN ('READY', 'FAILED', 'RATE_LIMIT_REACHED', 'RATE_LIMITED');

CREATE STATISTICS IF NOT EXISTS etlctl.etl_jobs_due_stats ON
    (status ->> 'overall'),
    (CASE status ->> 'overall'
        WHEN 'READY' THEN coalesce(next_run, '-infinity')
        WHEN 'RATE_LIMIT_REACHED' THEN coalesce(next_run, '-infinity')
        WHEN 'RATE_LIMITED' THEN coalesce(next_run, '-infinity')
        WHEN 'FAILED' THEN coalesce(greatest(last_run_started_at, last_run_finished_at, last_updated_at), '-infinity')
                           + make_interval(mins => greatest(coalesce(retry_interval_minutes, 0), 0))
    END)
FROM etl_jobs;

ANALYZE etl_jobs;
