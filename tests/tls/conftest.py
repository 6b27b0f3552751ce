"""Fixtures for the TLS tests: the throwaway PKI, test-owned TLS Redis servers, and a TLS front
for the shared RabbitMQ (the servers themselves are in ``tls_servers``).

Everything here belongs to the test session and is gone at its end: the certificates live in a
temporary directory, each ``redis-server`` (TLS only, ``--save ""``, no AOF) and the
``nats-server`` (TLS only) run on a free port in their own directory and are stopped by their
PID, and the RabbitMQ front is a thread in this process. The shared services on 6379 and 5672
are never touched but through the front, as a client, with queues in a random namespace that
are deleted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import ssl
from collections.abc import Iterator

import pytest
from tls_servers import PASSWORD, Pki, TlsFront, TlsRedis, make_pki

from polybus.testing.nats_harness import OwnedNats
from polybus.testing.plugin import skip_unless_available
from polybus.testing.rabbitmq_harness import RabbitMQHarness


def _require(program: str) -> None:
    if shutil.which(program) is None:
        pytest.skip(f"{program} is not installed; the TLS tests need it")


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throwaway CA, a server and a client certificate it signed, and an unrelated CA."""
    _require("openssl")
    return make_pki(tmp_path_factory.mktemp("pki"))


@contextlib.contextmanager
def _tls_redis(pki: Pki, auth_clients: str) -> Iterator[TlsRedis]:
    _require("redis-server")
    server = TlsRedis(pki, auth_clients=auth_clients)
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="session")
def tls_redis(pki: Pki) -> Iterator[TlsRedis]:
    """Redis over TLS; a client certificate is optional."""
    with _tls_redis(pki, "optional") as server:
        yield server


@pytest.fixture(scope="session")
def mtls_redis(pki: Pki) -> Iterator[TlsRedis]:
    """Redis over TLS that refuses a client without a certificate its CA signed."""
    with _tls_redis(pki, "yes") as server:
        yield server


@pytest.fixture(scope="session")
def rabbit() -> Iterator[RabbitMQHarness]:
    """The shared RabbitMQ, as the rest of the suite finds it (skipped, or failed where
    ``POLYBUS_REQUIRE`` names it, when it is down); its sweeper is the backstop that deletes
    what a failed test left in its namespace."""
    harness = RabbitMQHarness()
    skip_unless_available("rabbitmq", harness)
    yield harness
    harness.shutdown()


@pytest.fixture(scope="session")
def amqps_front(pki: Pki, rabbit: RabbitMQHarness) -> Iterator[TlsFront]:
    """TLS with the test CA's server certificate, relayed to the shared RabbitMQ."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    front = TlsFront(context, ("127.0.0.1", 5672))
    front.start()
    try:
        yield front
    finally:
        front.stop()


@pytest.fixture
def amqps_url(amqps_front: TlsFront, rabbit: RabbitMQHarness) -> Iterator[str]:
    """``amqps://`` to the front, in a fresh namespace; add TLS options with ``&``."""
    namespace = f"tls{os.urandom(5).hex()}"
    yield f"amqps://guest:guest@127.0.0.1:{amqps_front.port}/?namespace={namespace}"
    rabbit.cleanup(namespace)


@pytest.fixture(scope="session")
def tls_nats(pki: Pki) -> Iterator[OwnedNats]:
    """A test-owned nats-server with JetStream that speaks TLS only, with a password."""
    _require("nats-server")
    credentials = ("--user", "polybus", "--pass", PASSWORD)
    certificate = ("--tls", "--tlscert", str(pki.server_cert), "--tlskey", str(pki.server_key))
    server = OwnedNats(options=(*credentials, *certificate))
    try:
        server.start()
        yield server
    finally:
        server.remove()
