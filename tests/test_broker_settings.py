"""Broker settings: pure parsing of URLs and the existing system's variables."""

from __future__ import annotations

import pytest

from etlctl.broker.settings import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_HEARTBEAT,
    BrokerSettings,
    parse_url,
    resolve,
)
from etlctl.errors import UsageError

SECRET = "s3cr:t/p@ss"
URL = "amqp://etl:s3cr%3At%2Fp%40ss@rabbit.internal:5673/pulse_etl"


def test_no_broker_configured_is_none():
    assert resolve(environ={}) is None
    assert resolve(environ={"ETLCTL_AMQP_URL": "", "RABBITMQ_HOST": ""}) is None
    assert resolve(environ={"PATH": "/usr/bin", "ETLCTL_DSN": "postgresql://x"}) is None


def test_a_url_gives_every_part_decoded():
    settings = parse_url(URL)
    assert settings == BrokerSettings(host="rabbit.internal", port=5673, user="etl", password=SECRET,
                                      vhost="pulse_etl", source="ETLCTL_AMQP_URL")
    assert (settings.tls, settings.connect_timeout, settings.heartbeat) == (False, DEFAULT_CONNECT_TIMEOUT, DEFAULT_HEARTBEAT)


@pytest.mark.parametrize("url, host, port, vhost, user, password", [
    ("amqp://h", "h", 5672, "/", "guest", "guest"),  # pika's defaults
    ("amqp://h/", "h", 5672, "/", "guest", "guest"),
    ("amqp://h/%2F", "h", 5672, "/", "guest", "guest"),
    ("amqp://h/%2Fpulse", "h", 5672, "/pulse", "guest", "guest"),
    ("amqps://u:p@h", "h", 5671, "/", "u", "p"),
    ("amqp://u:@h:1/v", "h", 1, "v", "u", ""),
    ("amqp://u@[::1]:5672/v", "::1", 5672, "v", "u", "guest"),
    ("AMQP://U:P@H.example/V", "h.example", 5672, "V", "U", "P"),
])
def test_url_forms(url, host, port, vhost, user, password):
    settings = parse_url(url)
    assert (settings.host, settings.port, settings.vhost, settings.user, settings.password) == (host, port, vhost, user, password)


def test_the_flag_beats_the_variable_which_beats_rabbitmq_variables():
    env = {"ETLCTL_AMQP_URL": "amqp://a@from-env/v", "RABBITMQ_HOST": "from-rabbitmq-vars"}
    assert resolve("amqp://a@from-flag/v", environ=env).host == "from-flag"
    assert resolve("amqp://a@from-flag/v", environ=env).source == "--amqp-url"
    assert resolve(None, environ=env).host == "from-env"
    assert resolve(None, environ={"RABBITMQ_HOST": "from-rabbitmq-vars"}).host == "from-rabbitmq-vars"


def test_the_existing_systems_variables_with_its_defaults():
    settings = resolve(environ={"RABBITMQ_HOST": "mq.internal"})
    assert settings == BrokerSettings(host="mq.internal", port=5672, user="etl_user", password="etl_password",
                                      vhost="pulse_etl", source="RABBITMQ_* variables")
    settings = resolve(environ={"RABBITMQ_USER": "etl", "RABBITMQ_PASSWORD": SECRET, "RABBITMQ_PORT": "5673",
                                "RABBITMQ_VHOST": "/"})
    assert (settings.host, settings.port, settings.user, settings.password, settings.vhost) == (
        "localhost", 5673, "etl", SECRET, "/")


@pytest.mark.parametrize("port", ["", "x", "0", "65536", "-1", "5672.0"])
def test_a_bad_rabbitmq_port_is_a_usage_error(port):
    with pytest.raises(UsageError) as caught:
        resolve(environ={"RABBITMQ_HOST": "h", "RABBITMQ_PORT": port})
    assert caught.value.message == f"invalid RABBITMQ_PORT {port!r}: expected a port number such as 5672"
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("url, why", [
    ("http://u:SECRETPW@h/v", "expected amqp://user:password@host:port/vhost or amqps://..."),
    ("u:SECRETPW@h/v", "expected amqp://user:password@host:port/vhost or amqps://..."),
    ("amqp://u:SECRETPW@/v", "no host"),
    ("amqp://u:SECRETPW@h:99999/v", "expected amqp://user:password@host:port/vhost (port 0-65535)"),
    ("amqp://u:SECRETPW@h:0/v", "port 0"),
    ("amqp://u:SECRETPW@h:abc/v", "expected amqp://user:password@host:port/vhost (port 0-65535)"),
    ("amqp://u:SECRETPW@h/v#frag", "a URL fragment (#...) means nothing here"),
    ("amqp://u:SECRETPW@h/v?cacertfile=/ca.pem", "cacertfile need an amqps:// URL"),
    ("amqps://u:SECRETPW@h/v?verify=none", "unknown query parameter 'verify'; known: cacertfile, certfile, keyfile, "
                                           "server_name_indication, heartbeat (the connect timeout is "
                                           "ETLCTL_AMQP_CONNECT_TIMEOUT)"),
    ("amqps://u:SECRETPW@h/v?heartbeat=1&heartbeat=2", "query parameter 'heartbeat' given twice"),
    ("amqps://u:SECRETPW@h/v?heartbeat", "unreadable query string"),
])
def test_a_bad_url_says_why_and_never_shows_the_password(url, why):
    with pytest.raises(UsageError) as caught:
        resolve(url, environ={})
    assert caught.value.message == f"invalid --amqp-url: {why}"
    assert "SECRETPW" not in str(caught.value)


def test_amqps_with_a_ca_file_a_client_certificate_and_another_server_name():
    settings = parse_url("amqps://u:p@10.0.0.5/v?cacertfile=%2Fetc%2Fca.pem&certfile=/c.pem&keyfile=/k.pem"
                         "&server_name_indication=rabbit.internal&heartbeat=30")
    assert (settings.tls, settings.port, settings.cafile, settings.certfile, settings.keyfile, settings.server_name,
            settings.heartbeat) == (True, 5671, "/etc/ca.pem", "/c.pem", "/k.pem", "rabbit.internal", 30)
    assert parse_url("amqps://u:p@h/v").cafile is None  # the system's CAs


def test_timeouts_flag_then_variable_then_url_then_default():
    env = {"ETLCTL_AMQP_URL": "amqp://h/v?heartbeat=20"}
    assert (resolve(environ=env).connect_timeout, resolve(environ=env).heartbeat) == (DEFAULT_CONNECT_TIMEOUT, 20)
    env.update(ETLCTL_AMQP_CONNECT_TIMEOUT="500ms", ETLCTL_AMQP_HEARTBEAT="2m")
    assert (resolve(environ=env).connect_timeout, resolve(environ=env).heartbeat) == (0.5, 120)
    settings = resolve(environ=env, connect_timeout="3", heartbeat="0")
    assert (settings.connect_timeout, settings.heartbeat) == (3.0, 0)
    settings = resolve(environ={"RABBITMQ_HOST": "h", "ETLCTL_AMQP_HEARTBEAT": "15"}, connect_timeout=1.5)
    assert (settings.connect_timeout, settings.heartbeat) == (1.5, 15)


@pytest.mark.parametrize("kwargs, env, message", [
    ({"connect_timeout": "0"}, {}, "invalid --amqp-connect-timeout '0': expected a wait longer than 0, such as 5 or 500ms"),
    ({}, {"ETLCTL_AMQP_CONNECT_TIMEOUT": "soon"},
     "invalid ETLCTL_AMQP_CONNECT_TIMEOUT 'soon': expected a duration such as 30, 1.5, 500ms, 45s, 1m10s, 1h30m or 2d"),
    ({"heartbeat": "1.5"}, {}, "invalid --amqp-heartbeat '1.5': expected whole seconds from 0 (off) to 65535"),
    ({}, {"ETLCTL_AMQP_HEARTBEAT": "20h"}, "invalid ETLCTL_AMQP_HEARTBEAT '20h': expected whole seconds from 0 (off) to 65535"),
])
def test_bad_timeouts_are_usage_errors(kwargs, env, message):
    with pytest.raises(UsageError) as caught:
        resolve(environ={"RABBITMQ_HOST": "h", **env}, **kwargs)
    assert caught.value.message == message


def test_a_bad_heartbeat_in_the_url_names_the_url_not_its_text():
    with pytest.raises(UsageError) as caught:
        resolve(environ={"ETLCTL_AMQP_URL": "amqp://u:SECRETPW@h/v?heartbeat=-3"})
    assert caught.value.message == ("invalid heartbeat in ETLCTL_AMQP_URL '-3': expected a duration such as 30, 1.5, "
                                    "500ms, 45s, 1m10s, 1h30m or 2d")


@pytest.mark.parametrize("settings, shown", [
    (parse_url(URL), "amqp://etl@rabbit.internal:5673/pulse_etl"),
    (parse_url("amqps://u:Zq9secret@h/%2F"), "amqps://u@h:5671/%2F"),
    (parse_url("amqp://a%40b:Zq9secret@[::1]/v%20w"), "amqp://a%40b@[::1]:5672/v%20w"),
    (resolve(environ={"RABBITMQ_PASSWORD": SECRET}), "amqp://etl_user@localhost:5672/pulse_etl"),
])
def test_the_printable_form_never_holds_the_password(settings, shown):
    assert settings.shown == str(settings) == shown
    assert settings.password not in repr(settings)
    assert "password" not in repr(settings)


# --- the password in a file of its own, and what cron carries --------------------------------------


def password_file(tmp_path, text: str = SECRET + "\n", mode: int = 0o600) -> str:
    path = tmp_path / "amqp-password"
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def test_a_password_file_fills_in_what_the_url_leaves_out(tmp_path):
    path = password_file(tmp_path)
    env = {"ETLCTL_AMQP_URL": "amqp://etl@rabbit.internal/pulse_etl", "ETLCTL_AMQP_PASSWORD_FILE": path}
    assert resolve(environ=env).password == SECRET
    # A password in the URL wins (even an empty one); without a file, pika's default.
    assert resolve(environ={**env, "ETLCTL_AMQP_URL": "amqp://etl:given@h/v"}).password == "given"
    assert resolve(environ={**env, "ETLCTL_AMQP_URL": "amqp://etl:@h/v"}).password == ""
    assert resolve(environ={"ETLCTL_AMQP_URL": "amqp://etl@h/v"}).password == "guest"
    assert resolve("amqp://etl@h/v", environ={"ETLCTL_AMQP_PASSWORD_FILE": path}).password == SECRET
    # With the existing system's variables: RABBITMQ_PASSWORD, else the file, else its default.
    rabbit = {"RABBITMQ_HOST": "h", "ETLCTL_AMQP_PASSWORD_FILE": path}
    assert resolve(environ=rabbit).password == SECRET
    assert resolve(environ={**rabbit, "RABBITMQ_PASSWORD": "own"}).password == "own"
    assert resolve(environ={"RABBITMQ_HOST": "h"}).password == "etl_password"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_a_password_file_others_may_read_is_refused(tmp_path, mode):
    path = password_file(tmp_path, mode=mode)
    with pytest.raises(UsageError) as caught:
        resolve(environ={"ETLCTL_AMQP_URL": "amqp://etl@h/v", "ETLCTL_AMQP_PASSWORD_FILE": path})
    assert caught.value.message == (f"ETLCTL_AMQP_PASSWORD_FILE {path} is open to its group or others "
                                    f"(mode {mode:o}): chmod 600 {path}")
    assert SECRET not in str(caught.value)


def test_a_missing_password_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError) as caught:
        resolve(environ={"RABBITMQ_HOST": "h", "ETLCTL_AMQP_PASSWORD_FILE": str(tmp_path / "none")})
    assert caught.value.message == f"cannot read ETLCTL_AMQP_PASSWORD_FILE {tmp_path / 'none'}: No such file or directory"


def test_cron_carries_the_url_without_its_password(tmp_path):
    from etlctl.broker.settings import cron_environment, password_left_out

    env = {"ETLCTL_AMQP_URL": "amqps://etl:" + "s3cr%3At%2Fp%40ss" + "@rabbit.internal/pulse_etl?cacertfile=/etc/ca.pem"
                              "&heartbeat=30",
           "ETLCTL_AMQP_CONNECT_TIMEOUT": "2"}
    settings = resolve(environ=env)
    carried = cron_environment(settings, env)
    assert carried == [("ETLCTL_AMQP_URL", "amqps://etl@rabbit.internal:5671/pulse_etl?cacertfile=%2Fetc%2Fca.pem"),
                       ("ETLCTL_AMQP_CONNECT_TIMEOUT", "2"), ("ETLCTL_AMQP_HEARTBEAT", "30")]
    assert SECRET not in repr(carried) and "s3cr" not in repr(carried)
    assert password_left_out(settings, env)  # the password was in the URL: say where it must go
    # What cron's etlctl then reads is the same broker, with the password from the file.
    path = password_file(tmp_path)
    with_file = {**env, "ETLCTL_AMQP_PASSWORD_FILE": path}
    carried = cron_environment(resolve(environ=with_file), with_file)
    assert carried[1] == ("ETLCTL_AMQP_PASSWORD_FILE", path)
    assert not password_left_out(resolve(environ=with_file), with_file)
    assert resolve(environ=dict(carried)) == settings


def test_cron_carries_the_rabbitmq_variables_that_were_set_but_never_the_password():
    from etlctl.broker.settings import cron_environment, password_left_out

    env = {"RABBITMQ_HOST": "mq", "RABBITMQ_USER": "etl", "RABBITMQ_PASSWORD": SECRET, "PATH": "/bin"}
    settings = resolve(environ=env)
    assert cron_environment(settings, env) == [("RABBITMQ_HOST", "mq"), ("RABBITMQ_USER", "etl")]
    assert password_left_out(settings, env)
    no_password = {"RABBITMQ_HOST": "mq"}
    assert not password_left_out(resolve(environ=no_password), no_password)  # the existing system's default
    assert cron_environment(None, env) == []  # no broker: nothing to carry
    flag = resolve("amqp://guest@h/v", environ={})
    assert cron_environment(flag, {}) == [("ETLCTL_AMQP_URL", "amqp://guest@h:5672/v")]
    assert not password_left_out(flag, {})
