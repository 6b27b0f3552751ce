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
from polybus.core.limits import MAX_BODY

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
    """Bytes as is, str as utf-8, anything else with ``codec``; raise ``SerializationError``
    for what cannot be encoded or is larger than every broker carries."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        data, content_type = bytes(value), BYTES
    else:
        try:
            if isinstance(value, str):
                data, content_type = value.encode(), TEXT
            else:
                data, content_type = codec.encode(value), codec.content_type
        except Exception as exc:
            raise SerializationError(
                f"cannot encode a {type(value).__name__} with the {codec.content_type} codec:"
                f" {exc}; send bytes, str or a value the codec supports"
            ) from exc
    if len(data) > MAX_BODY:
        raise SerializationError(
            f"the body is {len(data):,} bytes, more than the {MAX_BODY:,} every broker carries"
            " (NATS's max_payload, less room for headers); store it elsewhere and send a"
            " reference; nothing was sent"
        )
    return data, content_type


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
