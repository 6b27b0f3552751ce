"""The public surface: deliberate exports, and the two APIs never drifting apart."""

from __future__ import annotations

import inspect

import pytest

import polybus
import polybus.aio
from polybus.blocking import patterns as blocking
from polybus.core import dead_letter_queue, pubsub, router, rpc, subscription, worker, workqueue
from polybus.core.url import parse_url

PAIRS = [
    (polybus.aio.AsyncBus, polybus.Bus),
    (workqueue.WorkQueue, blocking.WorkQueue),
    (pubsub.PubSub, blocking.PubSub),
    (router.Router, blocking.Router),
    (rpc.Rpc, blocking.Rpc),
    (subscription.Subscription, polybus.Subscription),
    (worker.Worker, blocking.Worker),
    (polybus.aio.AsyncMessage, polybus.Message),
    (dead_letter_queue.DeadLetters, polybus.DeadLetters),
]


def surface(cls: type) -> dict[str, bool]:
    """A class's public names, each with whether it is a method (else a property)."""
    return {name: callable(getattr(cls, name)) for name in dir(cls) if not name.startswith("_")}


@pytest.mark.parametrize("aio_cls, blocking_cls", PAIRS, ids=[p[1].__name__ for p in PAIRS])
def test_the_two_apis_offer_the_same_names(aio_cls, blocking_cls):
    assert surface(blocking_cls) == surface(aio_cls)


@pytest.mark.parametrize("aio_cls, blocking_cls", PAIRS, ids=[p[1].__name__ for p in PAIRS])
def test_their_methods_take_the_same_parameters(aio_cls, blocking_cls):
    for name, is_method in surface(aio_cls).items():
        if is_method:
            aio_params = inspect.signature(getattr(aio_cls, name)).parameters
            blocking_params = inspect.signature(getattr(blocking_cls, name)).parameters
            assert [(p.name, p.kind, p.default) for p in blocking_params.values()] == [
                (p.name, p.kind, p.default) for p in aio_params.values()
            ], f"{blocking_cls.__name__}.{name}"


@pytest.mark.parametrize("aio_cls, blocking_cls", PAIRS, ids=[p[1].__name__ for p in PAIRS])
def test_their_methods_say_what_they_do(aio_cls, blocking_cls):
    for name, is_method in surface(blocking_cls).items():
        if is_method:
            assert getattr(blocking_cls, name).__doc__, f"{blocking_cls.__name__}.{name}"


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
            "DeadLetter",
            "DeadLetters",
            "DeclarationConflict",
            "InvalidArgument",
            "InvalidName",
            "InvalidURL",
            "Message",
            "MissingDependency",
            "NotFound",
            "PeekedMessage",
            "PolybusError",
            "PubSub",
            "PublishFailed",
            "QueueStats",
            "ReceiveTimeout",
            "RemoteError",
            "RetryPolicy",
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
        @classmethod
        def capabilities_for(cls, url):
            capabilities = MemoryTransport.capabilities_for(url)
            return replace(
                capabilities, priority=False, ttl=False, delay=False, reason="a plain test broker"
            )

    transport = NoFrills(parse_url("memory://no-frills"))
    with polybus.connect(transport=transport) as bus:
        with pytest.raises(polybus.CapabilityMissing, match=r"priority.*plain test broker"):
            bus.work_queue("urgent", max_priority=5).send("x")
        with pytest.raises(polybus.CapabilityMissing, match="ttl"):
            bus.work_queue("plain").send("x", ttl=1.0)
        with pytest.raises(polybus.CapabilityMissing, match="delay"):
            bus.work_queue("plain").send("x", delay=1.0)
        bus.work_queue("plain").send("fine")
        assert bus.work_queue("plain").size() == 1


@pytest.mark.parametrize(
    "options",
    [
        {"max_retries": -1},
        {"backoff": -1},
        {"factor": 0.5},
        {"jitter": 2},
        {"retry_on": ValueError},
        {"dead_letter_on": ("ValueError",)},
    ],
    ids=lambda options: next(iter(options)),
)
def test_a_bad_retry_policy_is_refused_when_made(options):
    with pytest.raises(polybus.InvalidArgument):
        polybus.RetryPolicy(**options)
