"""A Redis that cannot be used says why, where, and never the password."""

from __future__ import annotations

import pytest

import polybus


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis://127.0.0.1:1/0", "nothing accepts connections at 127.0.0.1:1"),
        ("redis://127.0.0.1:6379/99", "127.0.0.1:6379 has no database 99"),
        ("redis://nobody:Secret@127.0.0.1:6379/0", "refused the user name or password"),
        ("redis://nosuchhost.invalid:6379/0", "host of nosuchhost.invalid:6379 is unknown"),
    ],
)
def test_a_failed_connection_says_what_happened_and_where(harness, url, says):
    with pytest.raises(polybus.ConnectionFailed) as caught:
        polybus.connect(url)
    assert says in str(caught.value)
    assert "Secret" not in str(caught.value)
