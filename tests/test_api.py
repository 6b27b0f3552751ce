"""The public surface: deliberate exports, and the two APIs never drifting apart."""

from __future__ import annotations

import inspect

import pytest

import polybus
import polybus.aio
from polybus.blocking import patterns as blocking
from polybus.core import pubsub, router, rpc, subscription, workqueue
from polybus.core.url import parse_url

PAIRS = [
    (polybus.aio.AsyncBus, polybus.Bus),
    (workqueue.WorkQueue, blocking.WorkQueue),
    (pubsub.PubSub, blocking.PubSub),
    (router.Router, blocking.Router),
    (rpc.Rpc, blocking.Rpc),
    (subscription.Subscription, blocking.Subscription),
]
# the asyncio side's plumbing used by the blocking wrappers, not user API
INTERNAL = {
    "consume_spec",
    "start_worker",
    "subscription_spec",
    "routing_spec",
    "async_worker",
    "qualify",
    "transient_name",
    "declare_queue",
    "declare_exchange",
    "forget_queue",
    "forget_exchange",
    "envelope",
    "rpc_client",
    "track",
    "untrack",
    "connect",
    "loop",
    "capabilities",
    "transport",
    "codec",
    "namespace",
    "bus",
    "kind",
    "options",
    "url",
}


def public_methods(cls: type) -> set[str]:
    return {n for n, _ in inspect.getmembers(cls, callable) if not n.startswith("_")}


@pytest.mark.parametrize("aio_cls, blocking_cls", PAIRS, ids=[p[1].__name__ for p in PAIRS])
def test_blocking_api_offers_every_method_of_the_asyncio_api(aio_cls, blocking_cls):
    missing = public_methods(aio_cls) - public_methods(blocking_cls) - INTERNAL
    assert not missing, f"{blocking_cls.__name__} lacks {sorted(missing)}"


@pytest.mark.parametrize("aio_cls, blocking_cls", PAIRS, ids=[p[1].__name__ for p in PAIRS])
def test_shared_methods_take_the_same_parameters(aio_cls, blocking_cls):
    for name in public_methods(aio_cls) & public_methods(blocking_cls) - INTERNAL:
        aio_params = list(inspect.signature(getattr(aio_cls, name)).parameters)
        blocking_params = list(inspect.signature(getattr(blocking_cls, name)).parameters)
        assert aio_params == blocking_params, f"{blocking_cls.__name__}.{name}"


def test_public_exports_are_deliberate():
    assert sorted(polybus.__all__) == sorted(
        [
            "Bus",
            "Capabilities",
            "CapabilityMissing",
            "Closed",
            "Codec",
            "ConfigurationError",
            "ConnectionFailed",
            "DeclarationConflict",
            "InvalidArgument",
            "InvalidName",
            "InvalidURL",
            "Message",
            "MissingDependency",
            "NotFound",
            "PolybusError",
            "PubSub",
            "PublishFailed",
            "ReceiveTimeout",
            "RemoteError",
            "Router",
            "Rpc",
            "RpcTimeout",
            "SerializationError",
            "Subscription",
            "Transport",
            "UnknownScheme",
            "Unroutable",
            "WorkQueue",
            "Worker",
            "connect",
            "register_codec",
        ]
    )
    for name in polybus.__all__:
        assert hasattr(polybus, name), name
    for name in polybus.aio.__all__:
        assert hasattr(polybus.aio, name), name


def test_every_error_is_a_polybus_error():
    errors = [getattr(polybus, n) for n in polybus.__all__ if n.endswith(("Error", "Timeout"))]
    errors += [polybus.DeclarationConflict, polybus.Closed, polybus.NotFound, polybus.Unroutable]
    for error in errors:
        assert issubclass(error, polybus.PolybusError), error
    assert issubclass(polybus.RpcTimeout, TimeoutError)
    assert issubclass(polybus.ReceiveTimeout, TimeoutError)


def test_the_core_never_imports_a_broker_client():
    import pathlib

    core = pathlib.Path(polybus.__file__).parent / "core"
    for source in core.glob("*.py"):
        text = source.read_text()
        for client in ("pika", "redis", "kombu", "aio_pika", "fakeredis"):
            assert f"import {client}" not in text and f"from {client}" not in text, source


def test_an_option_the_transport_cannot_honour_is_refused_not_ignored():
    from dataclasses import replace

    from polybus.transports.memory import MemoryTransport

    class NoFrills(MemoryTransport):
        capabilities = replace(
            MemoryTransport.capabilities, priority=False, ttl=False, reason="a plain test broker"
        )

    transport = NoFrills(parse_url("memory://no-frills"))
    with polybus.connect(transport=transport) as bus:
        with pytest.raises(polybus.CapabilityMissing, match=r"priority.*plain test broker"):
            bus.work_queue("urgent", max_priority=5).send("x")
        with pytest.raises(polybus.CapabilityMissing, match="ttl"):
            bus.work_queue("plain").send("x", ttl=1.0)
        bus.work_queue("plain").send("fine")
        assert bus.work_queue("plain").size() == 1
