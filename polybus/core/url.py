"""Broker URLs and the scheme → transport registry.

Built-in schemes map to dotted paths and are imported only when used, so a missing client library
is an error only for the URL that needs it. Third-party packages add schemes through the
``polybus.transports`` entry-point group (``name = "package.module:TransportClass"``).
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote, urlsplit

from polybus.core.errors import InvalidURL, MissingDependency, UnknownScheme

if TYPE_CHECKING:
    from polybus.core.transport import Transport

_PASSWORD = re.compile(r"(://[^:/@]*:)[^@/]*@")
ENV_VAR = "POLYBUS_URL"
DEFAULT_URL = "memory://"
ENTRY_POINT_GROUP = "polybus.transports"

# scheme -> (dotted path "module:Class", the pip extra that installs its client)
BUILTIN_TRANSPORTS: dict[str, tuple[str, str | None]] = {
    "memory": ("polybus.transports.memory:MemoryTransport", None),
    "redis": ("polybus.transports.redis:RedisTransport", "redis"),
    "rediss": ("polybus.transports.redis:RedisTransport", "redis"),
    "fakeredis": ("polybus.transports.redis:RedisTransport", "fakeredis"),
    "amqp": ("polybus.transports.rabbitmq:RabbitMQTransport", "rabbitmq"),
    "amqps": ("polybus.transports.rabbitmq:RabbitMQTransport", "rabbitmq"),
}


@dataclass(frozen=True, slots=True)
class BrokerURL:
    """A parsed broker URL. ``options`` holds the query string; ``namespace`` is polybus's own
    option that prefixes every queue and exchange name (isolation for tests and tenants)."""

    raw: str
    scheme: str
    host: str | None
    port: int | None
    username: str | None
    password: str | None
    path: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return self.options.get("namespace", "")

    def redacted(self) -> str:
        """The URL with its password hidden, for messages and logs."""
        return _PASSWORD.sub(r"\1***@", self.raw, count=1)


def resolve_url(url: str | None) -> str:
    """The explicit URL, else ``$POLYBUS_URL``, else ``memory://``."""
    return url or os.environ.get(ENV_VAR) or DEFAULT_URL


def parse_url(url: str) -> BrokerURL:
    """Parse a broker URL, or raise ``InvalidURL`` saying what is wrong."""
    if not isinstance(url, str) or "://" not in url:
        raise InvalidURL(
            f"{url!r} is not a broker URL; expected scheme://..., e.g. memory://, "
            "redis://localhost:6379/0 or amqp://guest:guest@localhost:5672/"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidURL(f"{url!r} is not a valid broker URL: {exc}") from exc
    return BrokerURL(
        raw=url,
        scheme=parts.scheme.lower(),
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
        path=unquote(parts.path),
        options=dict(parse_qsl(parts.query)),
    )


def _known_schemes() -> dict[str, str]:
    schemes = {scheme: path for scheme, (path, _extra) in BUILTIN_TRANSPORTS.items()}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        schemes.setdefault(ep.name, ep.value)
    return schemes


def transport_class(url: BrokerURL) -> type[Transport]:
    """The transport class registered for the URL's scheme, imported now."""
    schemes = _known_schemes()
    target = schemes.get(url.scheme)
    if target is None:
        close = difflib.get_close_matches(url.scheme, schemes, n=1)
        hint = f" Did you mean {close[0]}://?" if close else ""
        raise UnknownScheme(
            f"no transport for scheme {url.scheme!r} in {url.redacted()!r}.{hint} "
            f"Known schemes: {', '.join(sorted(schemes))}."
        )
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name == module_name:
            raise UnknownScheme(
                f"the {url.scheme}:// transport module {module_name} is not in this installation"
            ) from exc
        extra = BUILTIN_TRANSPORTS.get(url.scheme, ("", None))[1]
        fix = (
            f"pip install 'polybus[{extra}]'"
            if extra
            else f"install the package providing {module_name}"
        )
        raise MissingDependency(
            f"the {url.scheme}:// transport needs a library that is not installed ({exc.name}); "
            f"run: {fix}"
        ) from exc
    cls: type[Transport] = getattr(module, class_name)
    return cls


def create_transport(url: str) -> Transport:
    """Build (not connect) the transport for a URL."""
    parsed = parse_url(url)
    return transport_class(parsed)(parsed)
