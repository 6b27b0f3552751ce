"""The Redis transport: ``redis://``, ``rediss://`` and the server-less ``fakeredis://``."""

from polybus.transports.redis.transport import RedisTransport

__all__ = ["RedisTransport"]
