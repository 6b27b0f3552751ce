"""Broker URLs and the scheme → transport registry.

Built-in schemes map to dotted paths and are imported only when used, so a missing client library
is an error only for the URL that needs it. Third-party packages add schemes through the
``polybus.transports`` entry-point group (``name = "package.module:TransportClass"``).
"""

from __future__ import annotations

import difflib
import importlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from polybus.core.errors import InvalidURL, MissingDependency, UnknownScheme
from polybus.core.options import COMMON, UrlOption

if TYPE_CHECKING:
    from polybus.core.transport import Transport

ENV_VAR = "POLYBUS_URL"
DEFAULT_URL = "memory://"
ENTRY_POINT_GROUP = "polybus.transports"

# scheme -> (dotted path "module:Class", the pip extra that installs its client)
BUILTIN_TRANSPORTS: dict[str, tuple[str, str | None]] = {
    "memory": ("polybus.transports.memory:MemoryTransport", None),
    "redis": ("polybus.transports.redis:RedisTransport", "redis"),
    "rediss": ("polybus.transports.redis:RedisTransport", "redis"),
    "redis+sentinel": ("polybus.transports.redis:RedisTransport", "redis"),
    "redis+cluster": ("polybus.transports.redis:RedisTransport", "redis"),
    "fakeredis": ("polybus.transports.redis:RedisTransport", "fakeredis"),
    "amqp": ("polybus.transports.rabbitmq:RabbitMQTransport", "rabbitmq"),
    "amqps": ("polybus.transports.rabbitmq:RabbitMQTransport", "rabbitmq"),
    "nats": ("polybus.transports.nats:NatsTransport", "nats"),
    "tls": ("polybus.transports.nats:NatsTransport", "nats"),
    "nats+tls": ("polybus.transports.nats:NatsTransport", "nats"),
}


def redact(url: str) -> str:
    """The URL with its password hidden, for messages, logs and ``repr``: everything between
    the first ``:`` after ``://`` and the last ``@`` of the authority, even when the password
    holds an unencoded ``/``, ``#``, ``?`` or ``@``."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, _, hostpart = rest.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    return f"{scheme}://{user}{colon}{'***' if colon else ''}@{hostpart}"


# schemes people write for a broker whose scheme is another (a "did you mean" by name, where
# the spelling is too far for difflib)
ALIASES = {
    "rabbit": "amqp",
    "rabbitmq": "amqp",
    "ampq": "amqp",
    "amqp+ssl": "amqps",
    "redis+ssl": "rediss",
    "unix": "redis",
    "mem": "memory",
    "inmemory": "memory",
    "jetstream": "nats",
}


@dataclass(frozen=True, slots=True)
class BrokerURL:
    """A parsed broker URL. ``options`` holds the query string as given; ``settings`` the
    typed values of the options the transport takes (see ``configured``). Its ``repr`` and
    ``redacted()`` never show the password."""

    raw: str = field(repr=False)
    scheme: str
    host: str | None
    port: int | None
    username: str | None
    password: str | None = field(repr=False)
    path: str
    options: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict, repr=False)
    hosts: tuple[tuple[str, int | None], ...] = ()
    """Every host of the URL, in order (``amqp://u:p@h1:5672,h2:5673/``: the nodes of a
    cluster); ``host`` and ``port`` are the first's."""

    @property
    def namespace(self) -> str:
        """polybus's own option: a prefix of every queue and exchange name (isolation for
        tests and tenants)."""
        value: str = self.settings.get("namespace", self.options.get("namespace", ""))
        return value

    def redacted(self) -> str:
        """The URL with its password hidden, for messages and logs."""
        return redact(self.raw)

    @property
    def name(self) -> str:
        """Everything between ``://`` and the query, slashes stripped: the name of an
        in-process broker (``memory://name``, ``fakeredis://name``), case kept."""
        return self.raw.split("://", 1)[1].split("?", 1)[0].strip("/")

    def configured(self, accepted: Iterable[UrlOption]) -> BrokerURL:
        """This URL with ``settings`` parsed from its options: the ``COMMON`` ones and
        ``accepted`` (a transport's).

        :raises InvalidURL: an option is unknown (with the closest known name) or its value
            is wrong (saying what it must be).
        """
        known = {option.name: option for option in (*COMMON, *accepted)}
        settings: dict[str, Any] = {}
        for name, value in self.options.items():
            option = known.get(name)
            if option is None:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise InvalidURL(
                    f"{self.redacted()!r}: unknown option {name!r} for {self.scheme}://.{hint}"
                    f" Known options: {', '.join(sorted(known))}."
                )
            try:
                settings[name] = option.parse(value)
            except ValueError as exc:
                raise InvalidURL(
                    f"{self.redacted()!r}: option {name}={value[:60]!r}: {exc}"
                ) from None
        for name, option in known.items():
            settings.setdefault(name, option.default)
        return replace(self, settings=settings)


def resolve_url(url: str | None) -> str:
    """The explicit URL, else ``$POLYBUS_URL`` (when set and not empty), else ``memory://``."""
    if url is not None:
        return url
    return os.environ.get(ENV_VAR) or DEFAULT_URL


def parse_url(url: str) -> BrokerURL:
    """Parse a broker URL, or raise ``InvalidURL`` saying what is wrong (never showing the
    password)."""
    if not isinstance(url, str) or "://" not in url:
        shown = redact(url) if isinstance(url, str) else url
        raise InvalidURL(
            f"{shown!r} is not a broker URL; expected scheme://..., e.g. memory://, "
            "redis://localhost:6379/0 or amqp://guest:guest@localhost:5672/"
        )
    try:
        parts = urlsplit(url)
        hosts = tuple(_host_and_port(entry) for entry in _host_list(parts.netloc))
    except ValueError as exc:
        message = str(exc)
        if parts_password := _password_of(url):
            message = message.replace(parts_password, "***")
        raise InvalidURL(f"{redact(url)!r} is not a valid broker URL: {message}") from None
    options: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in options:
            raise InvalidURL(f"{redact(url)!r}: option {name!r} is given twice")
        options[name] = value
    return BrokerURL(
        raw=url,
        scheme=parts.scheme.lower(),
        host=hosts[0][0] if hosts else None,
        port=hosts[0][1] if hosts else None,
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
        path=unquote(parts.path),
        options=options,
        hosts=hosts,
    )


def _host_list(netloc: str) -> list[str]:
    """The ``host[:port]`` entries of a URL's authority, split at commas (none when empty)."""
    hostpart = netloc.rpartition("@")[2]
    if not hostpart:
        return []
    entries = hostpart.split(",")
    if "" in entries:
        raise ValueError(f"an empty host in {hostpart!r}")
    return entries


def _host_and_port(entry: str) -> tuple[str, int | None]:
    parts = urlsplit(f"//{entry}")
    port = parts.port  # raises ValueError when it is not a port number
    return parts.hostname or "", port


def _password_of(url: str) -> str:
    userinfo = url.partition("://")[2].rpartition("@")[0]
    return userinfo.partition(":")[2]


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
        close = [ALIASES[url.scheme]] if url.scheme in ALIASES else []
        close = close or difflib.get_close_matches(url.scheme, schemes, n=1)
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
