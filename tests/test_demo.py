"""`etlctl demo` (what `make demo` runs), end to end on its own embedded server: on a bare
machine, and with a broker configured (the session's private node).

Each demo spends about a minute waiting for next_run between its two cycles (the
shortest interval the column holds), so the two run side by side, in homes of their own.
"""

from __future__ import annotations

import re
import shutil
import sys
import uuid
from pathlib import Path

import pytest

from etlctl.store import embedded
from tests.helpers import etlctl_process, run_process


def check_cycles(out: str) -> None:
    for cycle in (1, 2):
        section = out.split(f"== Cycle {cycle}: schedule-next")[1].split("== Between cycles")[0]
        assert re.search(r"started job 1 \(Jira\): READY -> RUNNING, run [0-9a-f-]{36}, queued jira_projects_and_issue_types", section)
        assert re.search(r"started job 2 \(GitHub\): READY -> RUNNING, run [0-9a-f-]{36}, queued github_repositories", section)
        for step in ("jira_statuses_and_relationships", "jira_issues_with_changelogs", "jira_dev_status"):
            assert f"queued job 1: {step} extraction (next step)" in section
        assert "marked job 1 FINISHED" in section and "marked job 2 FINISHED" in section
    assert "Job completed. Resetting in 3 seconds..." in out
    assert re.search(r"reset job 1 \(Jira, tenant demo\) to READY; next run at .* \(in 1m\)", out)
    assert re.search(r"\s2\s+GitHub\s+reset\s+READY; next run at", out)
    assert "not starting job 1 (Jira, tenant demo): next_run in" in out
    assert ("In its own database only, the demo turns chaining on for every step of the jira and github kinds "
            "(etlctl.kind_steps.chain, the CHAIN column of `etlctl kinds`)") in out
    # The next step names the etlctl that ran (not on PATH after `make demo`), and a stop that works after it.
    here = Path(sys.executable).parent / "etlctl"
    assert re.search(rf"^Look around yourself: export ETLCTL_DSN='host=\S+ port=\d+ user=postgres dbname=etlctl_demo'; "
                     rf"{re.escape(str(here))} status$", out, re.MULTILINE)
    assert f"Stop the embedded server with: {here} db stop --dsn embedded" in out
    final = out.split("== Cycle 2: `sweep`")[1]
    assert re.search(r"^  1\s+demo\s+Jira\s+jira\s+READY\s", final, re.MULTILINE)
    assert re.search(r"^  2\s+demo\s+GitHub\s+github\s+READY\s", final, re.MULTILINE)


def check_without_broker(out: str) -> None:
    assert "No message broker is configured (ETLCTL_AMQP_URL, or RABBITMQ_HOST...): the messages wait in the " \
           "outbox, the table etlctl.queue" in out
    outbox = out.split("== The outbox")[1].split("== What happened")[0]
    assert outbox.count(" done ") == 14


def check_with_an_unreachable_broker(out: str) -> None:
    """One true sentence: configured, not answering, so the outbox; never "no broker configured", never "published"."""
    assert re.search(r"^The message broker configured does not answer \(cannot reach the message broker "
                     r"\(amqp://etl@127\.0\.0\.1:\d+/%2F\): connection refused\): the demo goes on without it: the "
                     r"messages wait in the outbox", out, re.MULTILINE)
    assert "No message broker is configured" not in out and "published" not in out
    outbox = out.split("== The outbox")[1].split("== What happened")[0]
    assert outbox.count(" done ") == 14


def check_with_broker(out: str) -> None:
    assert "A message broker is configured (amqp://etlctl_test@127.0.0.1:" in out
    assert re.search(r"-- a worker receives message 1 from extraction_queue_etlctl_demo: "
                     r'\{"tenant_id": 1, "integration_id": 1, "job_id": 1, "type": "jira_projects_and_issue_types", '
                     r'"provider": "jira", "token": "[0-9a-f-]{36}", "old_last_sync_date": null\}', out)
    assert re.search(r"published message 1 \(job 1 jira_projects_and_issue_types extraction, run [0-9a-f-]{36}\) "
                     r"to extraction_queue_etlctl_demo", out)
    outbox = out.split("== The outbox")[1].split("== What happened")[0]
    assert outbox.count(" published 20") == 14 and " pending" not in outbox  # 7 messages a cycle, all published


@pytest.fixture
def unused_port():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_demo_runs_two_full_cycles_without_and_with_a_broker(scratch, broker, queues, unused_port):
    queues.track("extraction_queue_etlctl_demo")
    homes = {name: scratch / f"demo-{name}-{uuid.uuid4().hex[:8]}" for name in ("bare", "broker", "unreachable")}
    envs = {"bare": {"ETLCTL_HOME": str(homes["bare"])},
            "broker": {"ETLCTL_HOME": str(homes["broker"]), "ETLCTL_AMQP_URL": broker.url},
            "unreachable": {"ETLCTL_HOME": str(homes["unreachable"]),
                            "ETLCTL_AMQP_URL": f"amqp://etl:secret@127.0.0.1:{unused_port}/"}}
    try:
        running = {name: etlctl_process(["demo"], None, env=env) for name, env in envs.items()}
        finished = {name: proc.communicate(timeout=400) for name, proc in running.items()}
        for name, proc in running.items():
            out, err = finished[name]
            assert proc.returncode == 0, f"{name}: {out[-3000:]}{err}"
            assert err == "", name
            check_cycles(out)
        check_without_broker(finished["bare"][0])
        check_with_broker(finished["broker"][0])
        check_with_an_unreachable_broker(finished["unreachable"][0])
    finally:
        for name, env in envs.items():
            run_process(["db", "stop"], None, env=env)
            embedded.stop(homes[name])
            shutil.rmtree(homes[name], ignore_errors=True)
