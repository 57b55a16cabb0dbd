"""etlctl metrics: Prometheus text format, parsed by prometheus_client's own parser; --textfile."""

from __future__ import annotations

import os
import stat
from datetime import datetime, timedelta, timezone

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import finished, running

NOW = datetime(2026, 11, 28, 15, 0, 0, tzinfo=timezone.utc)
FROZEN_AT = NOW
WEIRD = 'ac"me\\north\nside'  # a tenant name that needs every escape of the format




def naive(delta_seconds: float = 0) -> str:
    return (NOW + timedelta(seconds=delta_seconds)).strftime("%Y-%m-%d %H:%M:%S")


def parse(text: str) -> dict[str, dict]:
    """{family: {"type": ..., "samples": {frozenset(labels): value}}}"""
    out = {}
    for family in text_string_to_metric_families(text):
        out[family.name] = {"type": family.type, "help": family.documentation,
                            "samples": {frozenset(s.labels.items()): s.value for s in family.samples}}
    return out


@pytest.fixture
def seeded(db, cli, frozen):
    acme, weird = db.tenant("acme"), db.tenant(WEIRD)
    ids = {
        "ready": db.job("Jira", acme, db.integration(acme), last_run_finished_at=naive(-7200), next_run=naive(3600)),
        "running": db.job("GitHub", acme, db.integration(acme, "GitHub"), status=running(["github_repositories"]),
                          last_run_started_at=naive(-60)),
        "finished": db.job("Jira", weird, db.integration(weird), status=finished(), last_run_finished_at=naive(-300)),
        "old": db.job("Other", weird, None, status=finished(["only"]), last_run_finished_at=naive(-900)),
    }
    gave_up = finished()
    gave_up.update(reset_stage="gave_up", reset_gave_up_at=NOW.isoformat())
    ids["gave_up"] = db.job("Jira 2", acme, None, status=gave_up, last_run_finished_at=naive(-600))
    ids["failed"] = db.job("Jira 3", acme, db.integration(acme, "Jira"), status={"overall": "FAILED", "steps": {}}, last_updated_at=naive(-3600))
    db.job("Due", acme, db.integration(acme, "Jira"))
    assert cli("schedule-next").exit_code == 0  # queues two extraction messages (Due and Jira 3)
    claimed = cli("queue", "claim", "--worker", "w1", "--json").json()
    frozen.frozen.tick(120)
    ids["claimed"] = claimed["id"]
    return ids


def test_metrics_parse_with_a_real_prometheus_parser(db, cli, seeded):
    result = cli("metrics")
    assert (result.exit_code, result.stderr) == (0, "")
    metrics = parse(result.stdout)
    counters = {"etlctl_queue_published", "etlctl_queue_skipped", "etlctl_queue_nacked"}  # the parser drops _total
    assert set(metrics) == {
        "etlctl_jobs", "etlctl_job_last_success_age_seconds", "etlctl_resets_pending", "etlctl_resets_gave_up",
        "etlctl_queue_depth", "etlctl_queue_oldest_pending_age_seconds", "etlctl_oldest_finished_job_age_seconds",
        "etlctl_jobs_malformed",
    } | counters
    assert all(m["type"] == ("counter" if name in counters else "gauge") and m["help"] for name, m in metrics.items())
    assert [metrics[name]["samples"] for name in sorted(counters)] == [{frozenset(): 0}] * 3

    jobs = metrics["etlctl_jobs"]["samples"]
    assert jobs[frozenset({"state": "FINISHED", "tenant": WEIRD, "kind": "jira"}.items())] == 1
    assert jobs[frozenset({"state": "FINISHED", "tenant": WEIRD, "kind": "unknown"}.items())] == 1
    assert jobs[frozenset({"state": "RUNNING", "tenant": "acme", "kind": "github"}.items())] == 1
    assert jobs[frozenset({"state": "FAILED", "tenant": "acme", "kind": "jira"}.items())] == 0  # started by the tick
    assert jobs[frozenset({"state": "RUNNING", "tenant": "acme", "kind": "jira"}.items())] == 2
    assert sum(jobs.values()) == 7

    ages = metrics["etlctl_job_last_success_age_seconds"]["samples"]
    assert ages[frozenset({"job_id": str(seeded["ready"]), "job": "Jira", "tenant": "acme", "kind": "jira"}.items())] == 7320
    assert ages[frozenset({"job_id": str(seeded["finished"]), "job": "Jira", "tenant": WEIRD, "kind": "jira"}.items())] == 420
    assert len(ages) == 4  # jobs that never finished a run have no sample

    assert metrics["etlctl_resets_pending"]["samples"] == {
        frozenset({"tenant": "acme"}.items()): 0, frozenset({"tenant": WEIRD}.items()): 2}
    assert metrics["etlctl_resets_gave_up"]["samples"] == {
        frozenset({"tenant": "acme"}.items()): 1, frozenset({"tenant": WEIRD}.items()): 0}

    depth = metrics["etlctl_queue_depth"]["samples"]
    assert depth[frozenset({"phase": "extraction", "state": "unclaimed"}.items())] == 1
    assert depth[frozenset({"phase": "extraction", "state": "claimed"}.items())] == 1
    assert depth[frozenset({"phase": "embedding", "state": "unclaimed"}.items())] == 0
    assert len(depth) == 6
    assert metrics["etlctl_queue_oldest_pending_age_seconds"]["samples"][frozenset({"phase": "extraction"}.items())] == 120
    assert metrics["etlctl_oldest_finished_job_age_seconds"]["samples"] == {frozenset(): 1020}

    assert cli("queue", "done", seeded["claimed"]).exit_code == 0
    depth = parse(cli("metrics").stdout)["etlctl_queue_depth"]["samples"]
    assert depth[frozenset({"phase": "extraction", "state": "claimed"}.items())] == 0


def test_malformed_jobs_are_counted_by_tenant_and_the_rest_still_measured(db, cli, seeded):
    assert set(parse(cli("metrics").stdout)["etlctl_jobs_malformed"]["samples"].values()) == {0}
    acme = db.row(seeded["ready"])["tenant_id"]
    db.job("Bad", acme, None, status={**finished(), "reset_stage": "check", "reset_deadline": "soon"})
    db.job("Worse", acme, None, status={"overall": "READY", "steps": None})
    result = cli("metrics")
    assert (result.exit_code, result.stderr) == (0, "")
    metrics = parse(result.stdout)
    assert metrics["etlctl_jobs_malformed"]["samples"] == {
        frozenset({"tenant": "acme"}.items()): 2, frozenset({"tenant": WEIRD}.items()): 0}
    assert sum(metrics["etlctl_jobs"]["samples"].values()) == 9


def test_label_values_are_escaped(db, cli, seeded):
    text = cli("metrics").stdout
    assert 'tenant="ac\\"me\\\\north\\nside"' in text
    assert all(line.startswith(("#", "etlctl_")) for line in text.splitlines())


def test_an_empty_database(db, cli):
    metrics = parse(cli("metrics").stdout)
    assert metrics["etlctl_jobs"]["samples"] == {}
    assert metrics["etlctl_oldest_finished_job_age_seconds"]["samples"] == {frozenset(): 0}
    assert sum(metrics["etlctl_queue_depth"]["samples"].values()) == 0


def test_textfile_is_written_atomically(db, cli, seeded, tmp_path):
    target = tmp_path / "etlctl.prom"
    target.write_text("old content\n")
    reader = open(target)  # a node_exporter scrape in progress keeps reading the file it opened
    result = cli("metrics", "--textfile", target)
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
    assert reader.read() == "old content\n"  # replaced by a rename, never rewritten in place
    reader.close()
    assert target.read_text() == cli("metrics").stdout
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o644  # readable by node_exporter's user
    assert sorted(p.name for p in tmp_path.iterdir()) == ["etlctl.prom"]  # no temporary file left


def test_textfile_in_a_missing_directory_fails_with_one_line(db, cli, tmp_path):
    result = cli("metrics", "--textfile", tmp_path / "nope" / "etlctl.prom")
    assert result.exit_code == 1
    assert result.stderr == f"etlctl: cannot write --textfile {tmp_path / 'nope' / 'etlctl.prom'}: No such file or directory\n"


def test_the_per_job_family_is_written_while_it_streams(db, seeded):
    """A million jobs must never sit in memory: each per-job sample is written as soon as its row is read."""
    from etlctl.oncall import metrics
    from etlctl.store import connection
    from etlctl.store.settings import ConnectionSettings
    from etlctl.views import metrics as views

    read_so_far: list[int] = []
    written_after: list[int] = []

    class Out:
        def write(self, text: str) -> None:
            if text.startswith("etlctl_job_last_success_age_seconds{"):
                written_after.append(len(read_so_far))

    with connection.connect(ConnectionSettings(dsn=db.dsn), "metrics") as session:
        stream = session.stream

        def counted(query, **params):
            for row in stream(query, **params):
                read_so_far.append(row["id"])
                yield row

        session.stream = counted
        views.write(metrics.read(session), Out())
    assert len(read_so_far) == 4  # the jobs that have a last finish
    assert written_after == [1, 2, 3, 4]  # each sample written before the next row was read


def test_what_the_relays_did(db, cli, seeded):
    """Published and skipped messages leave the depth and count in the counters; every refusal counts."""
    [pending] = [r["id"] for r in db.sql("SELECT id FROM etlctl.queue WHERE claimed_at IS NULL")]
    db.sql("UPDATE etlctl.queue SET attempts = 3, refusals = 2, last_error = 'nacked by the broker' WHERE id = %s",
           pending)
    metrics = parse(cli("metrics").stdout)
    assert metrics["etlctl_queue_nacked"]["samples"] == {frozenset(): 2}
    assert metrics["etlctl_queue_depth"]["samples"][frozenset({"phase": "extraction", "state": "unclaimed"}.items())] == 1
    db.sql("UPDATE etlctl.queue SET published_at = now(), attempts = 4 WHERE id = %s", pending)
    metrics = parse(cli("metrics").stdout)
    assert metrics["etlctl_queue_published"]["samples"] == {frozenset(): 1}
    assert metrics["etlctl_queue_depth"]["samples"][frozenset({"phase": "extraction", "state": "unclaimed"}.items())] == 0
    assert metrics["etlctl_queue_nacked"]["samples"] == {frozenset(): 2}  # a counter: what happened stays counted
    db.sql("UPDATE etlctl.queue SET claimed_at = NULL, claimed_by = NULL, skipped_at = now(), skip_reason = 'over' "
           "WHERE id = %s", seeded["claimed"])
    metrics = parse(cli("metrics").stdout)
    assert metrics["etlctl_queue_skipped"]["samples"] == {frozenset(): 1}
    assert sum(metrics["etlctl_queue_depth"]["samples"].values()) == 0
    assert metrics["etlctl_queue_oldest_pending_age_seconds"]["samples"][frozenset({"phase": "extraction"}.items())] == 0
