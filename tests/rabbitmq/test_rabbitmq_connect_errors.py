"""A RabbitMQ that cannot be used says why and where, never the password, and a user's INFO
log shows polybus's lines, not pika's chatter."""

from __future__ import annotations

import logging

import pytest

import polybus


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("amqp://guest:guest@127.0.0.1:1/", "nothing accepts connections at 127.0.0.1:1"),
        ("amqp://guest:Secret@127.0.0.1:5672/", "refused the user name or password"),
        ("amqp://guest:guest@127.0.0.1:5672/nohost", "no virtual host 'nohost'"),
        ("amqp://guest:guest@nosuchhost.invalid:5672/", "host of nosuchhost.invalid:5672"),
    ],
)
def test_a_failed_connection_says_what_happened_and_where(rabbit, url, says):
    with pytest.raises(polybus.ConnectionFailed) as caught:
        polybus.connect(url)
    assert says in str(caught.value)
    assert "Secret" not in str(caught.value)


def test_pika_does_not_chatter_in_a_users_info_log(url, caplog):
    caplog.set_level(logging.INFO)
    with polybus.connect(url) as bus:
        bus.work_queue("q").send("x")
    with pytest.raises(polybus.ConnectionFailed):
        polybus.connect("amqp://guest:guest@127.0.0.1:1/")
    assert [r for r in caplog.records if r.name.startswith("pika")] == []
