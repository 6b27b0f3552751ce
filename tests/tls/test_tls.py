"""TLS from the URL: ``rediss://``, ``amqps://`` and ``tls://`` (NATS) take the ``ssl_``
options, verify the server against the CA they name, present a client certificate when asked,
and say in words — never with a raw ssl, redis, pika or nats-py exception, never with the
password — why a TLS connection failed.

Redis and NATS run test-owned, TLS only; RabbitMQ is the shared broker behind a TLS
front (see ``conftest.py``). Every server's certificate is signed by a throwaway CA.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from tls_servers import PASSWORD, Pki, TlsRedis

import polybus

FAILS_WITHIN = 10.0  # seconds: a refused certificate is an answer, not a timeout


def _round_trip_work_queue(bus: polybus.Bus, name: str) -> None:
    tasks = bus.work_queue(name, dead_letter=None)
    try:
        tasks.send({"over": "tls"})
        with tasks.consume(prefetch=1) as sub:
            msg = sub.receive(timeout=10)
            assert msg.body == {"over": "tls"}
            msg.ack()
    finally:
        tasks.delete()


def _connect_fails(url: str) -> polybus.ConnectionFailed:
    """Connect, expecting ``ConnectionFailed`` in good time; the error, for its message."""
    started = time.monotonic()
    with pytest.raises(polybus.ConnectionFailed) as caught:
        polybus.connect(url).close()
    assert time.monotonic() - started < FAILS_WITHIN
    assert PASSWORD not in str(caught.value)
    return caught.value


# -- rediss:// ----------------------------------------------------------------------------


def test_rediss_with_the_servers_ca_round_trips_a_work_queue_message(tls_redis, pki):
    # Given a URL that trusts the CA which signed the server's certificate
    url = tls_redis.url(f"ssl_ca_certs={pki.ca}")
    # When a message is sent, consumed and acked over it
    with polybus.connect(url) as bus:
        # Then it arrives intact (the publishing and acking links speak TLS as well)
        _round_trip_work_queue(bus, "tls-tasks")


def test_rediss_with_the_servers_ca_round_trips_a_pubsub_message(tls_redis, pki):
    # Given a subscriber on a bus that trusts the server's CA
    with polybus.connect(tls_redis.url(f"ssl_ca_certs={pki.ca}")) as bus:
        logs = bus.pubsub("tls-logs")
        with logs.subscribe() as sub:
            # When a message is published
            logs.publish("hello over tls")
            # Then the subscriber gets it
            assert sub.receive(timeout=10).body == "hello over tls"


def test_rediss_checks_the_hostname_against_the_certificates_names(tls_redis, pki):
    # Given the server's certificate names localhost (besides 127.0.0.1, used elsewhere)
    url = f"rediss://:{PASSWORD}@localhost:{tls_redis.port}/0?ssl_ca_certs={pki.ca}"
    # When the bus connects by that name, with hostname checking on (the default)
    with polybus.connect(url) as bus:
        # Then the name matches and messages flow
        _round_trip_work_queue(bus, "tls-by-name")


@pytest.mark.parametrize("trusting", ["the wrong CA", "the system's CAs"])
def test_rediss_with_a_ca_that_did_not_sign_the_server_fails_fast_saying_why(
    tls_redis: TlsRedis, pki: Pki, trusting: str
) -> None:
    # Given a URL (with a password) that trusts a CA which did not sign the server's certificate
    query = f"ssl_ca_certs={pki.other_ca}" if trusting == "the wrong CA" else ""
    url = tls_redis.url(query)
    # When the bus connects
    error = _connect_fails(url)
    # Then the error says the certificate did not verify, and where; not a network error
    message = str(error)
    assert "certificate" in message and "verif" in message, message
    assert f"127.0.0.1:{tls_redis.port}" in message, message
    assert "network:ConnectionError" not in message


def test_rediss_with_cert_reqs_none_connects_without_a_ca(tls_redis):
    # Given a URL that asks not to verify the server at all
    url = tls_redis.url("ssl_cert_reqs=none")
    # When a message round-trips over it
    with polybus.connect(url) as bus:
        # Then it works: the connection is encrypted but the server unverified
        _round_trip_work_queue(bus, "tls-unverified")


def test_rediss_mutual_tls_refuses_a_client_without_a_certificate(mtls_redis, pki):
    # Given a server that requires client certificates, and a URL that gives none
    url = mtls_redis.url(f"ssl_ca_certs={pki.ca}")
    # When the bus connects
    error = _connect_fails(url)
    # Then the error says where (and, through _connect_fails, never the password). What it
    # says beyond that depends on a race: TLS 1.3 lets the client finish its handshake first,
    # and the server's "certificate required" alert may be lost to the reset that follows it.
    assert f"127.0.0.1:{mtls_redis.port}" in str(error)


def test_rediss_mutual_tls_accepts_a_client_with_its_certificate(mtls_redis, pki):
    # Given a URL that presents the client certificate the server's CA signed
    url = mtls_redis.url(
        f"ssl_ca_certs={pki.ca}&ssl_certfile={pki.client_cert}&ssl_keyfile={pki.client_key}"
    )
    # When a message round-trips over it
    with polybus.connect(url) as bus:
        # Then the server let it in
        _round_trip_work_queue(bus, "mtls-tasks")


def _said_beyond_the_url(error: Exception, url: str) -> str:
    """The error's own words: its message without the (redacted) URL it quotes, so that an
    option counts as named only when the message names it, not when it echoes the URL."""
    from polybus.core.url import redact

    return str(error).replace(redact(url), "")


@pytest.mark.parametrize(
    ("option", "scheme"),
    [("ssl_ca_certs", "rediss"), ("ssl_keyfile", "rediss"), ("ssl_ca_certs", "amqps")],
)
def test_a_tls_file_that_does_not_exist_is_an_invalid_url_naming_the_option(
    pki: Pki, tmp_path: Path, option: str, scheme: str
) -> None:
    # Given a URL (with a password) whose TLS option names a file that is not there,
    # beside options whose files are fine
    missing = tmp_path / "missing.pem"
    files = {
        "ssl_ca_certs": pki.ca,
        "ssl_certfile": pki.client_cert,
        "ssl_keyfile": pki.client_key,
        option: missing,
    }
    query = "&".join(f"{name}={path}" for name, path in files.items())
    url = f"{scheme}://user:{PASSWORD}@127.0.0.1:1/?{query}"
    if scheme == "rediss":
        url = url.replace(":1/?", ":1/0?")
    # When the bus connects
    with pytest.raises(polybus.InvalidURL) as caught:
        polybus.connect(url)
    # Then the error names the option and its file in its own words, and hides the password
    said = _said_beyond_the_url(caught.value, url)
    assert option in said and str(missing) in said, str(caught.value)
    assert PASSWORD not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:{PASSWORD}@127.0.0.1:1/0?ssl_ca_certs=/ca.pem",
        f"redis://:{PASSWORD}@127.0.0.1:1/0?ssl_cert_reqs=none",
        f"amqp://guest:{PASSWORD}@127.0.0.1:1/?ssl_ca_certs=/ca.pem",
        f"amqp://guest:{PASSWORD}@127.0.0.1:1/?ssl_check_hostname=false",
        f"nats://u:{PASSWORD}@127.0.0.1:1?ssl_ca_certs=/ca.pem",
    ],
)
def test_ssl_options_on_a_plain_url_are_refused(url):
    # Given an ssl_ option on a URL that does not ask for TLS (it would be silently plain text)
    # When the bus connects
    with pytest.raises(polybus.InvalidURL) as caught:
        polybus.connect(url)
    # Then the URL is refused, pointing at the scheme that would use it, password hidden
    wanted = {"redis": "rediss://", "amqp": "amqps://", "nats": "tls://"}[url.split(":", 1)[0]]
    assert wanted in str(caught.value)
    assert PASSWORD not in str(caught.value)


# -- amqps:// -----------------------------------------------------------------------------


def test_amqps_with_the_servers_ca_round_trips_a_message(amqps_url, pki):
    # Given a URL to the TLS front that trusts the CA which signed its certificate
    with polybus.connect(f"{amqps_url}&ssl_ca_certs={pki.ca}") as bus:
        # When a message is sent, consumed and acked, Then it arrives intact
        _round_trip_work_queue(bus, "tls-tasks")


def test_amqps_with_the_wrong_ca_fails_fast_saying_why(amqps_url, amqps_front, pki):
    # Given a URL that trusts a CA which did not sign the front's certificate
    url = f"{amqps_url}&ssl_ca_certs={pki.other_ca}"
    # When the bus connects
    error = _connect_fails(url)
    # Then the error says the certificate did not verify
    message = str(error)
    assert "certificate" in message and "verif" in message, message


def test_amqps_with_cert_reqs_none_connects_without_a_ca(amqps_url):
    # Given a URL that asks not to verify the server at all
    with polybus.connect(f"{amqps_url}&ssl_cert_reqs=none") as bus:
        # When a message round-trips, Then it works
        _round_trip_work_queue(bus, "tls-unverified")


# -- tls:// (NATS) --------------------------------------------------------------------------


def _nats_url(server, query: str, scheme: str = "tls") -> str:
    return f"{scheme}://polybus:{PASSWORD}@127.0.0.1:{server.port}?{query}"


@pytest.mark.parametrize("scheme", ["tls", "nats+tls"])
def test_nats_tls_with_the_servers_ca_round_trips_a_message(tls_nats, pki, scheme):
    # Given a URL that trusts the CA which signed the server's certificate
    with polybus.connect(_nats_url(tls_nats, f"ssl_ca_certs={pki.ca}", scheme)) as bus:
        # When a message is sent, consumed and acked, Then it arrives intact
        _round_trip_work_queue(bus, "tls-tasks")


def test_nats_tls_with_the_wrong_ca_fails_fast_saying_why(tls_nats, pki):
    # Given a URL that trusts a CA which did not sign the server's certificate
    error = _connect_fails(_nats_url(tls_nats, f"ssl_ca_certs={pki.other_ca}&connect_timeout=2"))
    # Then the error says the certificate did not verify, and where
    message = str(error)
    assert "certificate" in message and "verif" in message, message
    assert f"127.0.0.1:{tls_nats.port}" in message, message
