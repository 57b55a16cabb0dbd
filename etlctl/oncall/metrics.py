"""`etlctl metrics`: the Prometheus metrics about jobs and the queue, read from the database.

Every metric is a gauge named ``etlctl_*``, computed from the database at one
instant (the clock seam's now):

    etlctl_jobs{state,tenant,kind}                        jobs by overall state (every known state, 0 included)
    etlctl_job_last_success_age_seconds{job_id,job,tenant,kind}
                                                          seconds since the job's last run finished (jobs that have one)
    etlctl_resets_pending{tenant}                         FINISHED jobs whose reset has not given up
    etlctl_resets_gave_up{tenant}                         FINISHED jobs whose reset gave up (they wait for a person)
    etlctl_queue_depth{phase,state}                       messages waiting: pending ("unclaimed") or claimed by a worker
                                                          and not done; published and skipped ones are gone
    etlctl_queue_oldest_pending_age_seconds{phase}        age of the oldest message waiting (0: none)
    etlctl_queue_published_total                          counter: messages a relay published (the broker confirmed them)
    etlctl_queue_skipped_total                            counter: messages a relay skipped (their run was over)
    etlctl_queue_nacked_total                             counter: times the broker refused a message (nack or
                                                          return); each stays pending and is retried
    etlctl_oldest_finished_job_age_seconds                age of the oldest FINISHED job (0: none)
    etlctl_jobs_malformed{tenant}                         jobs whose status document etlctl cannot read as a run

The three counters are counts over the outbox, which etlctl never deletes from:
they only grow (an owner who prunes etlctl.queue resets them, which Prometheus
handles as a counter reset).

This module reads them (:func:`read`); the exposition text, and writing it
atomically for node_exporter's textfile collector, is :mod:`etlctl.views.metrics`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from etlctl.core.rules import OVERALL_STATES, PHASES
from etlctl.oncall import doctor
from etlctl.store import jobs

QUEUE_STATES = ("unclaimed", "claimed")


@dataclass
class Family:
    name: str
    help: str
    # (labels, value) pairs: a list, or for the per-job family a stream read while it is written
    samples: Iterable[tuple[dict, float]] = field(default_factory=list)
    type: str = "gauge"

    def add(self, value: float, **labels: object) -> None:
        self.samples.append(({k: str(v) for k, v in labels.items()}, value))


def read(session, tenant: str | None = None) -> list[Family]:
    """Every family, in order (of one tenant's jobs and messages with ``tenant``). The one with
    a sample per job streams from a server-side cursor as it is written (so that a million jobs
    never sit in memory): write it out before the session closes. The others are aggregated in SQL."""
    ids = jobs.tenant_ids(session, tenant)
    counts = session.all("metrics_job_counts", tenant_ids=ids)
    queue = session.all("metrics_queue", tenant_ids=ids)
    relayed = session.one("metrics_relay", tenant_ids=ids)
    oldest = session.one("metrics_oldest_finished", tenant_ids=ids)["seconds"]
    by_state, *rest = families(counts, queue, oldest)
    malformed = Family("etlctl_jobs_malformed", "Jobs whose status document etlctl cannot read as a run "
                       "(etlctl doctor names each and its fix); the flow leaves them alone.")
    bad: dict[str, int] = {}
    for f in doctor.malformed_jobs(session, ids):
        name = str(f.job.tenant_name or f.job.tenant_id)
        bad[name] = bad.get(name, 0) + 1
    for name in sorted({row["tenant"] for row in counts} | set(bad)):
        malformed.add(bad.get(name, 0), tenant=name)
    last_success = Family("etlctl_job_last_success_age_seconds",
                          "Seconds since the job's last run finished successfully (last_run_finished_at).",
                          samples=_last_success(session, ids))
    return [by_state, last_success, *rest, malformed, *relay_families(relayed)]


def relay_families(row: dict) -> list[Family]:
    """The relays' counters."""
    published = Family("etlctl_queue_published_total", "Messages a relay published: the broker confirmed them.",
                       type="counter")
    published.add(row["published"])
    skipped = Family("etlctl_queue_skipped_total", "Messages a relay skipped, never published: their run was over.",
                     type="counter")
    skipped.add(row["skipped"])
    nacked = Family("etlctl_queue_nacked_total", "Times the broker refused a message (a nack, or a return: no such "
                    "queue); each stays pending and the next pass retries it.", type="counter")
    nacked.add(row["refusals"])
    return [published, skipped, nacked]


def _last_success(session, tenant_ids: list[int] | None) -> Iterator[tuple[dict, float]]:
    for row in session.stream("metrics_last_success", tenant_ids=tenant_ids):
        yield ({"job_id": str(row["id"]), "job": str(row["job_name"]), "tenant": str(row["tenant"]),
                "kind": str(row["kind"])}, row["seconds"])


def families(counts: list[dict], queue: list[dict], oldest_finished: float | None) -> list[Family]:
    """The families other than the per-job one, from SQL's aggregates."""
    by_state = Family("etlctl_jobs", "Jobs by overall state, tenant and kind.")
    states: dict[tuple[str, str], dict[str, int]] = {}
    for row in counts:
        states.setdefault((row["tenant"], row["kind"]), {})[row["overall"]] = row["jobs"]
    for (tenant, kind), found in sorted(states.items()):
        for state in list(OVERALL_STATES) + sorted(s for s in found if s not in OVERALL_STATES):
            by_state.add(found.get(state, 0), state=state, tenant=tenant, kind=kind)

    pending = Family("etlctl_resets_pending", "FINISHED jobs whose reset to READY is pending (not given up).")
    gave_up = Family("etlctl_resets_gave_up", "FINISHED jobs whose reset gave up: each waits for a person (etlctl doctor).")
    for tenant in sorted({row["tenant"] for row in counts}):
        finished = [row for row in counts if row["tenant"] == tenant and row["overall"] == "FINISHED"]
        stuck = sum(row["gave_up"] for row in finished)
        gave_up.add(stuck, tenant=tenant)
        pending.add(sum(row["jobs"] for row in finished) - stuck, tenant=tenant)

    depth = Family("etlctl_queue_depth", "Queued messages still waiting, by phase: pending (unclaimed: not yet "
                   "published) or claimed by a worker and not done.")
    oldest_message = Family("etlctl_queue_oldest_pending_age_seconds", "Age of the oldest queued message still waiting.")
    queued = {(row["phase"], "claimed" if row["claimed"] else "unclaimed"): row for row in queue}
    phases = list(PHASES) + sorted({row["phase"] for row in queue} - set(PHASES))
    for phase in phases:
        for state in QUEUE_STATES:
            row = queued.get((phase, state))
            depth.add(row["messages"] if row else 0, phase=phase, state=state)
        ages = [row["oldest_seconds"] for (p, _), row in queued.items() if p == phase]
        oldest_message.add(max(ages) if ages else 0, phase=phase)

    oldest = Family("etlctl_oldest_finished_job_age_seconds", "Age of the oldest FINISHED job (0 when there is none).")
    oldest.add(oldest_finished or 0)
    return [by_state, pending, gave_up, depth, oldest_message, oldest]
