"""Body codecs, named by content type.

bytes travel as they are, str as utf-8, anything else through the bus's default codec (JSON
unless configured). A receiver decodes by the content type the message carries, so one bus can
read what another bus with a different default codec wrote. Add a codec with ``register_codec``.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Any

from polybus.core.errors import ConfigurationError, MissingDependency, SerializationError

BYTES = "application/octet-stream"
TEXT = "text/plain; charset=utf-8"


class Codec(ABC):
    """Turns values into bytes and back; ``content_type`` names it on the wire."""

    content_type: str

    @abstractmethod
    def encode(self, value: Any) -> bytes: ...

    @abstractmethod
    def decode(self, data: bytes) -> Any: ...


class JsonCodec(Codec):
    content_type = "application/json"

    def encode(self, value: Any) -> bytes:
        return json.dumps(
            value, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()

    def decode(self, data: bytes) -> Any:
        return json.loads(data)


class MsgpackCodec(Codec):
    content_type = "application/msgpack"

    def __init__(self) -> None:
        try:
            import msgpack
        except ImportError as exc:
            raise MissingDependency(
                "the msgpack codec needs msgpack; run: pip install 'polybus[msgpack]'"
            ) from exc
        self._msgpack = msgpack

    def encode(self, value: Any) -> bytes:
        data: bytes = self._msgpack.packb(value, use_bin_type=True)
        return data

    def decode(self, data: bytes) -> Any:
        return self._msgpack.unpackb(data, raw=False)


_codecs: dict[str, Codec] = {}
_factories: dict[str, type[Codec]] = {"json": JsonCodec, "msgpack": MsgpackCodec}


def register_codec(name: str, codec: Codec) -> None:
    """Make a codec available by short name and by its content type."""
    _codecs[name] = codec
    _codecs[codec.content_type] = codec


def get_codec(name: str) -> Codec:
    """A codec by short name (``json``, ``msgpack``) or content type."""
    codec = _codecs.get(name)
    if codec is None:
        factory = _factories.get(name) or next(
            (f for f in _factories.values() if f.content_type == name), None
        )
        if factory is None:
            raise ConfigurationError(
                f"no codec named {name!r}; known: {', '.join(sorted(_factories))} "
                "(add one with polybus.register_codec)"
            )
        codec = factory()
        register_codec(name, codec)
    return codec


def encode_body(value: Any, codec: Codec) -> tuple[bytes, str]:
    """Bytes as is, str as utf-8, anything else with ``codec``; raise ``SerializationError``."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value), BYTES
    if isinstance(value, str):
        return value.encode(), TEXT
    try:
        return codec.encode(value), codec.content_type
    except Exception as exc:
        raise SerializationError(
            f"cannot encode a {type(value).__name__} with the {codec.content_type} codec: {exc}; "
            "send bytes, str or a value the codec supports"
        ) from exc


MAX_HEADER_DEPTH = 32
_INT64 = range(-(2**63), 2**63)


def check_headers(headers: dict[str, Any]) -> None:
    """Refuse, before anything is sent, a header that not every transport can carry: Redis
    keeps headers as JSON, RabbitMQ as AMQP field tables (no floats, 64-bit integers), memory
    as they are. So code tested on ``memory://`` fails there exactly as it would on a broker.

    :raises SerializationError: naming the header and what to send instead.
    """
    for key, value in headers.items():
        if not isinstance(key, str):
            raise SerializationError(f"header name {key!r} is not a str")
        _check_header_value(value, repr(key), 0)


def _check_header_value(value: Any, where: str, depth: int) -> None:
    if value is None or isinstance(value, (str, bool)):
        return
    if isinstance(value, int):
        if value in _INT64:
            return
        problem = f"{value} does not fit in 64 bits"
    elif depth >= MAX_HEADER_DEPTH:
        problem = f"nests deeper than {MAX_HEADER_DEPTH} levels"
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_header_value(item, f"{where}[{index}]", depth + 1)
        return
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                problem = f"has a key that is not a str ({key!r})"
                break
            _check_header_value(item, f"{where}[{key!r}]", depth + 1)
        else:
            return
    else:
        problem = f"is a {type(value).__name__}"
    raise SerializationError(
        f"header {where} {problem}, which not every broker can carry; use str, int (64-bit), "
        "bool, None, or lists and dicts of them (a float or a date as a str); nothing was sent"
    )


def decode_body(data: bytes, content_type: str) -> Any:
    """The value a body stands for, by its content type; unknown types stay bytes."""
    if content_type == BYTES or not content_type:
        return data
    if content_type.startswith("text/"):
        return data.decode()
    try:
        codec = get_codec(content_type)
    except ConfigurationError:
        return data
    try:
        return codec.decode(data)
    except Exception as exc:
        raise SerializationError(f"cannot decode a {content_type} body: {exc}") from exc
