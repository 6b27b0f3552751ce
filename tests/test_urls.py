"""URL parsing, the scheme registry and its errors."""

from __future__ import annotations

import sys
import time

import pytest

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
    for scheme, (path, extra) in BUILTIN_TRANSPORTS.items():
        assert ":" in path, scheme
        assert extra is None or extra in {"redis", "fakeredis", "rabbitmq"}
