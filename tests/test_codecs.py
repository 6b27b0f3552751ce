"""Codecs: pluggable, named by content type, failing loudly."""

from __future__ import annotations

import pytest

import polybus
from polybus.core.codecs import Codec, decode_body, encode_body, get_codec


class Upper(Codec):
    content_type = "application/x-upper"

    def encode(self, value: object) -> bytes:
        return str(value).upper().encode()

    def decode(self, data: bytes) -> object:
        return data.decode().lower()


def test_a_registered_codec_is_used_by_name_and_decoded_by_content_type(polybus_bus):
    polybus.register_codec("upper", Upper())
    with polybus.connect(polybus_bus.url, codec="upper") as sender:
        sender.work_queue("shout").send(12345)
    with polybus_bus.work_queue("shout").consume() as sub:
        msg = sub.receive(timeout=5)
        msg.ack()
    assert msg.content_type == "application/x-upper"
    assert msg.data == b"12345" and msg.body == "12345"


def test_unknown_codec_name_is_a_configuration_error():
    with pytest.raises(polybus.ConfigurationError, match="json"):
        get_codec("yaml-ish")


def test_bytes_and_str_bypass_the_codec():
    json = get_codec("json")
    assert encode_body(b"\x00", json) == (b"\x00", "application/octet-stream")
    assert encode_body("é", json) == ("é".encode(), "text/plain; charset=utf-8")
    assert decode_body(b"x", "application/x-never-registered") == b"x"


def test_nan_is_not_silently_turned_into_invalid_json():
    with pytest.raises(polybus.SerializationError):
        encode_body(float("nan"), get_codec("json"))


def test_corrupt_body_raises_serialization_error_on_access():
    with pytest.raises(polybus.SerializationError):
        decode_body(b"{not json", "application/json")
