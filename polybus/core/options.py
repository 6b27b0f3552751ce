"""The query options a broker URL takes: declared once per transport, checked before connecting.

A transport lists its ``UrlOption``s; every URL also takes the ``COMMON`` ones. An option a
transport does not know is refused with the closest known name (a misspelled ``namespace`` that
were ignored would put an application's queues in the wrong place), and a value is parsed and
checked here, so transports read typed settings and never a raw string.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from polybus.core.errors import ConfigurationError
from polybus.core.names import check_namespace

Parser = Callable[[str], Any]


@dataclass(frozen=True)
class UrlOption:
    """One ``?name=value``: how its text is parsed (a ``ValueError`` says what is wrong with
    it), its value when absent, and what it means (for the error that lists the options)."""

    name: str
    parse: Parser
    default: Any
    help: str


def seconds(*, allow_zero: bool = False) -> Parser:
    """A number of seconds, more than zero (or zero, where that means 'off')."""

    def parse(text: str) -> float:
        value = float(text)
        if not (value > 0 or (allow_zero and value == 0)) or value == float("inf"):
            raise ValueError(
                f"must be a number of seconds, {'0 or more' if allow_zero else 'above 0'}"
            )
        return value

    return parse


def count(low: int, high: int) -> Parser:
    """A whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        if not text.strip().isdigit() or not low <= int(text) <= high:
            raise ValueError(f"must be a whole number from {low} to {high}")
        return int(text)

    return parse


def choice(*values: str) -> Parser:
    def parse(text: str) -> str:
        if text not in values:
            raise ValueError(f"must be one of {', '.join(values)}")
        return text

    return parse


def flag(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def text(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    return value


def namespace(value: str) -> str:
    return check_namespace(value)


OPERATION_TIMEOUT = 15.0

COMMON = (
    UrlOption("namespace", namespace, "", "prefix every queue and exchange name with this"),
    UrlOption(
        "declare",
        flag,
        True,
        "false: use queues and exchanges as they exist, declaring none (as declare=False on"
        " every pattern)",
    ),
    UrlOption(
        "operation_timeout",
        seconds(),
        OPERATION_TIMEOUT,
        "seconds a send, declaration or query may take before it raises (default 15)",
    ),
)

TLS = (
    UrlOption("ssl_ca_certs", text, None, "file of CA certificates to verify the server with"),
    UrlOption("ssl_certfile", text, None, "file of this client's certificate (mutual TLS)"),
    UrlOption("ssl_keyfile", text, None, "file of this client's private key (mutual TLS)"),
    UrlOption(
        "ssl_cert_reqs",
        choice("required", "none"),
        "required",
        "verify the server's certificate (required) or not (none)",
    ),
    UrlOption("ssl_check_hostname", flag, True, "check the certificate names the host"),
)
"""For ``rediss://`` and ``amqps://``; the names redis-py and kombu users know."""


def tls_context(settings: dict[str, Any]) -> ssl.SSLContext:
    """The client TLS context the ``TLS`` options describe (the system's CAs by default).

    Each file is checked on its own, so that the error names the option and the file at fault:
    with three files given, "No such file or directory" alone does not say which one is missing.

    :raises ConfigurationError: a file cannot be read or holds no certificate or key (naming
        the option and its file), or a key is given without its certificate.
    """
    ca, cert, key = settings["ssl_ca_certs"], settings["ssl_certfile"], settings["ssl_keyfile"]
    if key is not None and cert is None:
        raise ConfigurationError(f"ssl_keyfile={key!r} needs the certificate too: ssl_certfile")
    for name, path in (("ssl_ca_certs", ca), ("ssl_certfile", cert), ("ssl_keyfile", key)):
        if path is not None:
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                raise ConfigurationError(
                    f"{name}={path!r}: cannot read the file ({exc.strerror or exc})"
                ) from exc
    try:
        context = ssl.create_default_context(cafile=ca)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ConfigurationError(f"ssl_ca_certs={ca!r}: holds no CA certificate ({exc})") from exc
    if settings["ssl_cert_reqs"] == "none":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.check_hostname = settings["ssl_check_hostname"]
    if cert is not None:
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ValueError) as exc:
            raise ConfigurationError(
                f"ssl_certfile={cert!r} and ssl_keyfile={key!r}: not a certificate and its"
                f" private key ({exc})"
            ) from exc
    return context
