"""The servers and certificates of the TLS tests: a throwaway PKI, a TLS-only ``redis-server``
owned by the test, and a TLS front that relays to a plain TCP service (the shared RabbitMQ).

Certificates are made with the ``openssl`` command rather than a Python library so that the
tests need nothing the package does not install; they are what a careful operator would make
(a CA with ``keyCertSign``, leaves with ``subjectAltName`` and key identifiers), so a stricter
default context in a future Python still accepts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from polybus.testing.harness import OwnedServer

PASSWORD = "s3cret-tls-pw"
"""Every test-owned server asks for it, so that every failure message can be checked for it."""

START_TIMEOUT = 10.0


# -- certificates -------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """The files a test points URLs and servers at."""

    ca: Path  # signed the server and client certificates
    server_cert: Path  # for localhost and 127.0.0.1
    server_key: Path
    client_cert: Path  # for mutual TLS
    client_key: Path
    other_ca: Path  # an unrelated CA: "the wrong CA"


def _openssl(directory: Path, *args: str) -> None:
    done = subprocess.run(
        ["openssl", *args], cwd=directory, capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {done.stderr}")


def _make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    _openssl(
        directory,
        "req", "-x509", "-new", "-nodes", "-days", "2",
        "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-keyout", key.name, "-out", cert.name,
        "-subj", f"/CN=polybus {name} test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
    )  # fmt: skip
    return cert, key


def _make_leaf(
    directory: Path, name: str, ca: tuple[Path, Path], usage: str, alt_names: str | None
) -> tuple[Path, Path]:
    key, csr, cert = (directory / f"{name}{ext}" for ext in (".key", ".csr", ".pem"))
    extensions = directory / f"{name}.ext"
    lines = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        f"extendedKeyUsage={usage}",
        "subjectKeyIdentifier=hash",
        "authorityKeyIdentifier=keyid,issuer",
    ]
    if alt_names:
        lines.append(f"subjectAltName={alt_names}")
    extensions.write_text("\n".join(lines) + "\n")
    _openssl(
        directory,
        "req", "-new", "-nodes",
        "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-keyout", key.name, "-out", csr.name, "-subj", f"/CN=polybus {name}",
    )  # fmt: skip
    _openssl(
        directory,
        "x509", "-req", "-in", csr.name, "-days", "2",
        "-CA", ca[0].name, "-CAkey", ca[1].name, "-CAcreateserial",
        "-out", cert.name, "-extfile", extensions.name,
    )  # fmt: skip
    return cert, key


def make_pki(directory: Path) -> Pki:
    """A throwaway CA, a server and a client certificate it signed, and an unrelated CA."""
    ca = _make_ca(directory, "ca")
    other_ca = _make_ca(directory, "other-ca")
    server = _make_leaf(directory, "server", ca, "serverAuth", "DNS:localhost,IP:127.0.0.1")
    client = _make_leaf(directory, "client", ca, "clientAuth", None)
    return Pki(ca[0], server[0], server[1], client[0], client[1], other_ca[0])


# -- Redis with TLS -----------------------------------------------------------------------


class TlsRedis(OwnedServer):
    """A ``redis-server`` that speaks only TLS, owned by the test session."""

    def __init__(self, pki: Pki, *, auth_clients: str) -> None:
        super().__init__("polybus-redis-tls-")
        self.pki = pki
        self.auth_clients = auth_clients

    def url(self, query: str = "") -> str:
        """``rediss://`` with the password, and ``query`` (without its ``?``)."""
        base = f"rediss://:{PASSWORD}@127.0.0.1:{self.port}/0"
        return f"{base}?{query}" if query else base

    def command(self) -> list[str]:
        return [
            "redis-server",
            "--port", "0",
            "--tls-port", str(self.port),
            "--bind", "127.0.0.1",
            "--tls-cert-file", str(self.pki.server_cert),
            "--tls-key-file", str(self.pki.server_key),
            "--tls-ca-cert-file", str(self.pki.ca),
            "--tls-auth-clients", self.auth_clients,
            "--requirepass", PASSWORD,
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "no",
        ]  # fmt: skip

    def unanswered(self) -> str | None:
        """None when the server answers PING over TLS (as a trusted client), else why not."""
        import redis

        try:
            client = redis.Redis(
                host="127.0.0.1",
                port=self.port,
                password=PASSWORD,
                ssl=True,
                ssl_ca_certs=str(self.pki.ca),
                ssl_certfile=str(self.pki.client_cert),
                ssl_keyfile=str(self.pki.client_key),
                socket_connect_timeout=0.5,
                socket_timeout=0.5,
            )
            try:
                client.ping()
            finally:
                client.close()
        except (redis.RedisError, OSError) as exc:
            return repr(exc)
        return None


# -- RabbitMQ behind a TLS front ----------------------------------------------------------


class TlsFront:
    """Terminates TLS on a free port and relays the bytes to a plain TCP service, as stunnel
    would: RabbitMQ here has no TLS listener, and the test must not reconfigure it.

    It runs an event loop in a thread of its own: asyncio's TLS transport reads and writes
    one TLS connection safely, which two threads sharing an ``SSLSocket`` would not."""

    def __init__(self, context: ssl.SSLContext, upstream: tuple[str, int]) -> None:
        self._context = context
        self._upstream = upstream
        self._thread = threading.Thread(target=self._run, name="polybus-tls-front", daemon=True)
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._relays: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None
        self.port = 0

    def start(self) -> None:
        self._thread.start()
        if not self._started.wait(START_TIMEOUT) or self._failure is not None:
            raise RuntimeError(f"the TLS front did not start: {self._failure!r}")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by start(); a thread must not raise
            self._failure = exc
            self._started.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(
            self._relay, "127.0.0.1", 0, ssl=self._context, ssl_handshake_timeout=5
        )
        self.port = server.sockets[0].getsockname()[1]
        self._started.set()
        async with server:
            await self._stop.wait()
        for relay in self._relays:
            relay.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)

    async def _relay(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        upstream_out: asyncio.StreamWriter | None = None
        pipes: list[asyncio.Future[None]] = []
        try:
            upstream_in, upstream_out = await asyncio.open_connection(*self._upstream)
            pipes = [
                asyncio.ensure_future(self._pipe(client_in, upstream_out)),
                asyncio.ensure_future(self._pipe(upstream_in, client_out)),
            ]
            await asyncio.gather(*pipes)
        except (OSError, asyncio.CancelledError):
            pass  # a client that left, or the front stopping: close both sides
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            self._relays.discard(task)
            for writer in (client_out, upstream_out):
                if writer is not None:
                    writer.close()
                    with contextlib.suppress(OSError, asyncio.CancelledError):
                        await writer.wait_closed()

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        finally:
            sink.close()  # one side ended: end the other, as a proxy does
