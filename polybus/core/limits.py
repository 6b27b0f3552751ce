"""The limits every call is checked against: the strictest of the brokers polybus speaks.

Each transport could refuse what its broker cannot carry, but then code tested on ``memory://``
would fail on RabbitMQ for a reason memory never saw. So the core checks every argument against
these limits, once, before a transport sees it, and every transport gives the same error for the
same call. The broker that sets each limit is named beside it.
"""

from __future__ import annotations

MAX_NAME = 200
"""Characters in a queue or exchange name a user gives (the rest of RabbitMQ's 255 bytes is left
for the namespace and for the names polybus derives, such as ``<name>.dead``)."""

MAX_BROKER_NAME = 255
"""Bytes in a name as the broker sees it, namespace included (AMQP's short string)."""

MAX_NAMESPACE = 50
"""Characters in a URL's ``namespace``: a namespace, a dot and a 200-character name fit 255."""

MAX_KEY = 255
"""UTF-8 bytes in a routing key or binding pattern (AMQP's short string)."""

MAX_PROPERTY = 255
"""UTF-8 bytes in ``message_id``, ``correlation_id`` and ``reply_to`` (AMQP's short string)."""

MAX_PRIORITY = 255
"""The highest ``max_priority`` of a queue, and of a message's ``priority`` (an AMQP octet)."""

MAX_PREFETCH = 65535
"""Unacked messages a consumer may hold (AMQP's ``basic.qos`` takes a 16-bit count)."""

MIN_TTL = 0.001
"""Seconds: brokers count time-to-live in whole milliseconds, so less would be zero."""

MAX_TTL = 4_294_967.295
"""Seconds: RabbitMQ refuses a time-to-live above 2**32 - 1 milliseconds."""

MAX_BODY = 896 * 1024
"""Bytes in a body: NATS carries a message of 1 MiB at most (its default ``max_payload``) with
its headers; 128 KiB of that is left for the headers and properties."""

MAX_HEADERS = 60 * 1024
"""Bytes the headers take, both as an AMQP field table and as ASCII JSON: JetStream refuses a
message whose headers pass 64 KiB (NATS carries them, with the properties, as JSON in one
header; 4 KiB is left for the properties), and RabbitMQ drops the connection for properties
over one frame of 128 KiB (``frame_max``)."""

MAX_HEADER_DEPTH = 32
"""Levels of lists and dicts nested in a header value."""
