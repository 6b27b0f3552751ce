"""URL parsing, the scheme registry and its errors."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

import polybus
from polybus.core.url import BUILTIN_TRANSPORTS, parse_url, resolve_url, transport_class


def test_url_comes_from_argument_then_environment_then_memory(monkeypatch):
    monkeypatch.delenv("POLYBUS_URL", raising=False)
    assert resolve_url(None) == "memory://"
    monkeypatch.setenv("POLYBUS_URL", "redis://env:6379/0")
    assert resolve_url(None) == "redis://env:6379/0"
    assert resolve_url("amqp://arg/") == "amqp://arg/"


def test_parse_keeps_credentials_options_and_redacts_the_password():
    url = parse_url("amqp://user:s%40cret@host:5673/vh?namespace=ns&heartbeat=5")
    assert (url.scheme, url.host, url.port) == ("amqp", "host", 5673)
    assert (url.username, url.password) == ("user", "s@cret")
    assert url.namespace == "ns" and url.options["heartbeat"] == "5"
    assert "s%40cret" not in url.redacted() and "***" in url.redacted()


def test_a_url_names_the_hosts_of_a_cluster_in_order():
    url = parse_url("amqp://user:p%40ss@h1:5672,H2:5673,[::1],h4/vh?queue_type=quorum")
    assert url.hosts == (("h1", 5672), ("h2", 5673), ("::1", None), ("h4", None))
    assert (url.host, url.port, url.username, url.password) == ("h1", 5672, "user", "p@ss")
    assert url.path == "/vh" and url.options == {"queue_type": "quorum"}
    assert "p%40ss" not in url.redacted()
    assert parse_url("redis://localhost:6379/0").hosts == (("localhost", 6379),)


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("amqp://u:secret@h1:5672,,h3/", "an empty host"),
        ("nats://u:secret@h1:4222,h2:port", "h2:port|port"),
    ],
)
def test_a_malformed_host_list_is_refused_without_the_password(url, complaint):
    with pytest.raises(polybus.InvalidURL, match=complaint) as raised:
        parse_url(url)
    assert "secret" not in str(raised.value)


@pytest.mark.parametrize("url", ["redis://h1:6379,h2:6380/0", "memory://a,b"])
def test_a_transport_of_one_host_refuses_several(url):
    with pytest.raises(polybus.InvalidURL, match="takes one host, not 2"):
        polybus.connect(url)


def test_unknown_scheme_suggests_the_closest_known_one():
    with pytest.raises(polybus.UnknownScheme, match="Did you mean redis://"):
        polybus.connect("reddis://localhost")


def test_missing_client_library_names_the_extra_to_install(monkeypatch):
    # Given pika is not importable and the rabbitmq transport not yet loaded
    monkeypatch.setitem(sys.modules, "pika", None)
    monkeypatch.delitem(sys.modules, "polybus.transports.rabbitmq", raising=False)
    for name in list(sys.modules):
        if name.startswith("polybus.transports.rabbitmq."):
            monkeypatch.delitem(sys.modules, name)
    # Then asking for amqp:// says what to install
    with pytest.raises(polybus.MissingDependency, match=r"pip install 'polybus\[rabbitmq\]'"):
        transport_class(parse_url("amqp://localhost/"))


def test_third_party_transports_register_through_entry_points(monkeypatch):
    from importlib.metadata import EntryPoint

    import polybus.core.url as url_module

    point = EntryPoint(
        "mybroker", "polybus.transports.memory:MemoryTransport", "polybus.transports"
    )
    monkeypatch.setattr(url_module, "entry_points", lambda group: [point])
    with polybus.connect("mybroker://shared") as bus:
        bus.work_queue("q").send("via a plugin scheme")
        assert bus.work_queue("q").size() == 1


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1/0", "amqp://guest:guest@127.0.0.1:1/"])
def test_unreachable_broker_fails_fast_with_connection_failed(url):
    scheme = url.split(":")[0]
    try:
        transport_class(parse_url(url))
    except polybus.PolybusError as exc:
        pytest.skip(f"{scheme} transport not available: {exc}")
    started = time.monotonic()
    with pytest.raises(polybus.ConnectionFailed, match=r"127\.0\.0\.1:1"):
        polybus.connect(url)
    assert time.monotonic() - started < 15


def test_every_builtin_scheme_names_an_importable_path_or_an_extra():
    with open(Path(__file__).parents[1] / "pyproject.toml", "rb") as project:
        extras = tomllib.load(project)["project"]["optional-dependencies"]
    for scheme, (path, extra) in BUILTIN_TRANSPORTS.items():
        assert ":" in path, scheme
        assert extra is None or extra in extras, scheme


@pytest.mark.parametrize(
    "url",
    [
        "redis://:Secret@h:99999/0",
        "redis://:Secret@h:abc/0",
        "redis://user:Sec/ret@h:6379/0",
        "amqp://user:Sec#ret@h:5672/",
        "amqp://user:Sec?ret@h:5672/",
        "redis://:Secret@h/0?namespce=x",
        "amqp://u:Secret@h/?heartbeat=-1",
        "amqp://u:Secret@h/?ssl_ca_certs=/nowhere",
        "amqps://u:Secret@h/?ssl_ca_certs=/nowhere",
    ],
)
def test_a_refused_url_never_shows_its_password(url):
    with pytest.raises(polybus.InvalidURL) as caught:
        polybus.connect(url)
    assert "Secret" not in str(caught.value) and "ret@" not in str(caught.value)
    assert "***" in str(caught.value)


def test_repr_and_bus_url_hide_the_password():
    parsed = parse_url("amqp://user:Secret@host:5672/vh")
    assert "Secret" not in repr(parsed)
    assert "Secret" not in parsed.redacted()
    with polybus.connect("memory://user:Secret@redacted") as bus:
        assert bus.url == "memory://user:***@redacted"


def test_an_empty_url_is_refused_not_taken_for_memory(monkeypatch):
    monkeypatch.delenv("POLYBUS_URL", raising=False)
    with pytest.raises(polybus.InvalidURL):
        polybus.connect("")
    monkeypatch.setenv("POLYBUS_URL", "")  # set but empty: as if unset
    assert resolve_url(None) == "memory://"


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        ("redis://localhost/7?namespce=x", "Did you mean 'namespace'"),
        ("memory://?namspace=x", "Did you mean 'namespace'"),
        ("amqp://localhost/?hearbeat=5", "Did you mean 'heartbeat'"),
        ("rediss://localhost/0?ca_certs=/x", "Did you mean 'ssl_ca_certs'"),
    ],
)
def test_an_unknown_url_option_is_refused_with_the_closest_known_one(url, hint):
    with pytest.raises(polybus.InvalidURL, match=hint):
        polybus.connect(url)


@pytest.mark.parametrize(
    "option",
    ["heartbeat=-1", "heartbeat=x", "connect_timeout=0", "reconnect_timeout=-1", "queue_type=x"],
)
def test_bad_amqp_options_are_invalid_urls(option):
    with pytest.raises(polybus.InvalidURL, match=option.split("=")[0]):
        polybus.connect(f"amqp://guest:guest@127.0.0.1:1/?{option}")


def test_an_option_given_twice_is_refused():
    with pytest.raises(polybus.InvalidURL, match="twice"):
        polybus.connect("memory://x?namespace=a&namespace=b")


@pytest.mark.parametrize(
    ("url", "meant"),
    [
        ("rabbit://h/", "amqp"),
        ("rabbitmq://h/", "amqp"),
        ("reddis://h", "redis"),
        ("mem://", "memory"),
    ],
)
def test_a_scheme_written_another_way_suggests_the_right_one(url, meant):
    with pytest.raises(polybus.UnknownScheme, match=f"Did you mean {meant}://"):
        polybus.connect(url)
