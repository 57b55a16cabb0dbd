"""Connections to a real RabbitMQ: reachable or not, refused logins and vhosts, TLS, timeouts.
What each failure becomes is an etlctl error with exit code 8 and no password in it."""

from __future__ import annotations

import dataclasses
import socket

import pytest

from etlctl.broker import connection
from etlctl.broker.publisher import Message, Publisher, Status
from etlctl.broker.settings import parse_url
from etlctl.errors import BROKER_UNAVAILABLE, BrokerRefused, BrokerUnavailable, UsageError

WRONG_PASSWORD = "Wr0ng-pass-7c1e"


def connect_error(url: str, **changes):
    settings = dataclasses.replace(parse_url(url), **changes)
    with pytest.raises((BrokerUnavailable, UsageError)) as caught:
        connection.connect(settings).close()
    return caught.value


def assert_no_secret(error, *secrets):
    for text in (error.message, error.detail or "", str(error)):
        for secret in secrets:
            assert secret not in text


def test_a_working_connection(broker_settings):
    with connection.connect(broker_settings) as broker:
        assert broker.is_open
        assert broker.inspect_queue("etlctl_test_no_such_queue") is None
        # The control channel was closed by that 404 and comes back for the next call.
        assert broker.inspect_queue("etlctl_test_no_such_queue") is None
    assert not broker.is_open


def test_a_wrong_password_is_refused_clearly_and_never_shown(broker):
    error = connect_error(broker.url_for(password=WRONG_PASSWORD))
    assert isinstance(error, BrokerRefused)
    assert error.exit_code == BROKER_UNAVAILABLE == 8
    user = parse_url(broker.url).user
    shown = parse_url(broker.url_for(password=WRONG_PASSWORD)).shown
    assert error.message == (f"the message broker ({shown}) refused the login of user {user!r}: "
                             "wrong user name or password")
    assert_no_secret(error, WRONG_PASSWORD, broker.password)


def test_an_unknown_user_reads_the_same_as_a_wrong_password(broker):
    error = connect_error(broker.url_for(user="nobody_here", password=WRONG_PASSWORD))
    assert isinstance(error, BrokerRefused)
    assert error.message.endswith("refused the login of user 'nobody_here': wrong user name or password")


def test_a_missing_vhost_is_named(broker):
    error = connect_error(broker.url_for(vhost="pulse_etl_typo"))
    assert isinstance(error, BrokerRefused)
    shown = parse_url(broker.url_for(vhost="pulse_etl_typo")).shown
    assert error.message == f"the message broker ({shown}) refused the vhost 'pulse_etl_typo': it does not exist"
    assert_no_secret(error, broker.password)


def test_a_vhost_without_permissions_says_so(node_control):
    node_control.ctl("add_vhost", "etlctl_test_closed")
    try:
        error = connect_error(node_control.url_for(vhost="etlctl_test_closed"))
    finally:
        node_control.ctl("delete_vhost", "etlctl_test_closed")
    assert isinstance(error, BrokerRefused)
    assert error.message.endswith(f"refused user {parse_url(node_control.url).user!r} access to the vhost "
                                  "'etlctl_test_closed': no permissions there")


def test_nothing_listening_is_unavailable(broker):
    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    error = connect_error(broker.url, port=port, host="127.0.0.1")
    assert type(error) is BrokerUnavailable
    assert error.message == (f"cannot reach the message broker (amqp://{parse_url(broker.url).user}@127.0.0.1:{port}"
                             "/pulse_etl): connection refused")


def test_an_unknown_host_is_unavailable(broker):
    error = connect_error(broker.url, host="no-such-host.invalid")
    assert type(error) is BrokerUnavailable
    assert "cannot resolve 'no-such-host.invalid'" in error.message


def test_the_connect_timeout_applies_to_a_server_that_never_answers(broker):
    with socket.socket() as silent:  # accepts TCP (the kernel does) and never says a word of AMQP
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        error = connect_error(broker.url, host="127.0.0.1", port=silent.getsockname()[1], connect_timeout=0.3)
    assert type(error) is BrokerUnavailable
    assert error.message.endswith("no answer within 0.3s (the connect timeout)")


def test_the_app_stopped_is_unavailable_and_a_publish_in_flight_is_reported_unconfirmed(node_control, queues):
    queue = queues.declare(queues.name("outage"))
    settings = parse_url(node_control.url)
    broker = connection.connect(settings)
    publisher = Publisher(broker)
    try:
        first = publisher.publish([Message(queue, b'{"n": 1}', "m1", 1_700_000_000)])
        assert [o.status for o in first.outcomes] == [Status.CONFIRMED]
        node_control.stop_app()
        try:
            with pytest.raises(BrokerUnavailable) as caught:
                connection.connect(settings)
            assert caught.value.message.endswith("connection refused")
            report = publisher.publish([Message(queue, b'{"n": 2}', "m2", 1_700_000_000),
                                        Message(queue, b'{"n": 3}', "m3", 1_700_000_000)])
        finally:
            node_control.start_app()
    finally:
        broker.close()
    assert isinstance(report.error, BrokerUnavailable)
    assert report.error.exit_code == 8
    assert report.confirmed == []
    assert [(o.message.message_id, o.status) for o in report.outcomes] == [
        ("m2", Status.UNCONFIRMED), ("m3", Status.UNCONFIRMED)]
    assert all(o.reason for o in report.outcomes)
    queues.reconnect()
    assert [m.body for m in queues.drain(queue)] == [b'{"n": 1}']


def test_amqps_with_the_servers_ca_works(tls_broker, queues):
    queue = queues.declare(queues.name("tls"))
    settings = parse_url(tls_broker.tls_url(tls_broker.ca_file))
    assert settings.tls and settings.cafile == str(tls_broker.ca_file)
    with connection.connect(settings) as conn:
        report = Publisher(conn).publish([Message(queue, b'{"over": "tls"}', "t1", 1_700_000_000)])
    assert [o.status for o in report.outcomes] == [Status.CONFIRMED]
    assert [m.body for m in queues.drain(queue)] == [b'{"over": "tls"}']


def test_amqps_checks_the_certificate_against_the_system_cas(tls_broker):
    error = connect_error(tls_broker.tls_url())  # a private CA the system does not trust
    assert type(error) is BrokerUnavailable
    assert error.message.endswith("TLS: self-signed certificate in certificate chain "
                                  "(give the CA with ?cacertfile=/path/ca.pem in the URL)")
    assert_no_secret(error, tls_broker.password)


def test_amqps_checks_the_host_name(tls_broker):
    error = connect_error(tls_broker.tls_url(tls_broker.ca_file), server_name="rabbit.elsewhere")
    assert type(error) is BrokerUnavailable
    assert "TLS: Hostname mismatch" in error.message


def test_plain_amqp_to_the_tls_port_and_back(tls_broker):
    error = connect_error(tls_broker.url, port=tls_broker.tls_port)
    assert error.message.endswith("the server broke off the AMQP handshake (a TLS port? then use amqps://)")
    error = connect_error(tls_broker.tls_url(tls_broker.ca_file), port=tls_broker.amqp_port)
    assert error.message.endswith(f"TLS: WRONG_VERSION_NUMBER (is {tls_broker.amqp_port} a TLS port?)")


def test_an_unreadable_ca_file_is_a_usage_error(tmp_path, broker):
    error = connect_error("amqps://u:Zq9secret@localhost/v?cacertfile=" + str(tmp_path / "missing.pem"))
    assert type(error) is UsageError
    assert error.message == "invalid ETLCTL_AMQP_URL: cannot use its cacertfile: No such file or directory"


def test_the_settings_reach_pikas_parameters(tmp_path, broker):
    settings = dataclasses.replace(parse_url("amqp://etl:Zq9secret@mq.internal:5673/pulse_etl?heartbeat=20"),
                                   connect_timeout=2.5)
    params = connection.parameters(settings, name="etlctl relay")
    assert (params.host, params.port, params.virtual_host, params.heartbeat) == ("mq.internal", 5673, "pulse_etl", 20)
    # The connect timeout bounds TCP and the whole handshake; one attempt, no silent retries.
    assert (params.socket_timeout, params.stack_timeout, params.connection_attempts) == (2.5, 2.5, 1)
    assert (params.credentials.username, params.credentials.password, params.credentials.erase_on_connect) == (
        "etl", "Zq9secret", True)
    assert params.ssl_options is None
    assert params.client_properties == {"connection_name": "etlctl relay", "product": "etlctl"}
    if getattr(broker, "ca_file", None):
        tls = connection.parameters(parse_url(f"amqps://u:p@10.1.2.3/v?cacertfile={broker.ca_file}"
                                              "&server_name_indication=rabbit.internal"))
        assert tls.port == 5671
        assert tls.ssl_options.server_hostname == "rabbit.internal"
        assert tls.ssl_options.context.check_hostname
