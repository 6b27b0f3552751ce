"""The one error tree of polybus; no broker client's exception ever reaches a user.

PolybusError
├── ConfigurationError          bad URL, unknown scheme, missing extra
│   ├── InvalidURL
│   ├── UnknownScheme
│   └── MissingDependency
├── InvalidArgument             an argument out of range or of the wrong type (also a ValueError)
│   └── InvalidName             queue/exchange name, routing key or pattern
├── SerializationError          body the codec cannot encode (or decode)
├── DeclarationConflict         redeclared with other options
├── NotFound                    the queue or exchange does not exist
├── ConnectionFailed            broker unreachable or connection lost
├── PublishFailed               broker refused (nack) or could not route a mandatory message
│   └── Unroutable
├── ReceiveTimeout              no message within the timeout (also a TimeoutError)
├── RpcTimeout                  no reply within the timeout (also a TimeoutError)
├── RemoteError                 the RPC handler raised
├── CapabilityMissing           the transport cannot do what was asked
└── Closed                      the bus or subscription is closed
"""

from __future__ import annotations


class PolybusError(Exception):
    """Root of every error polybus raises."""


class ConfigurationError(PolybusError):
    """The bus cannot be configured as asked."""


class InvalidURL(ConfigurationError):
    """A broker URL could not be parsed."""


class UnknownScheme(ConfigurationError):
    """No transport is registered for the URL's scheme."""


class MissingDependency(ConfigurationError):
    """A transport's client library is not installed."""


class InvalidArgument(PolybusError, ValueError):
    """An argument is of the wrong type or outside what every broker accepts."""


class InvalidName(InvalidArgument):
    """A queue or exchange name, routing key or binding pattern is not valid."""


class SerializationError(PolybusError):
    """A body could not be encoded (nothing was sent) or decoded."""


class DeclarationConflict(PolybusError):
    """A queue or exchange exists with other options than the ones declared."""


class NotFound(PolybusError):
    """The queue or exchange does not exist."""


class ConnectionFailed(PolybusError):
    """The broker cannot be reached, or the connection was lost and could not be restored."""


class PublishFailed(PolybusError):
    """The broker did not confirm a publish; the message may not have been stored."""


class Unroutable(PublishFailed):
    """A mandatory message matched no queue."""


class ReceiveTimeout(PolybusError, TimeoutError):
    """No message arrived within the timeout."""


class RpcTimeout(PolybusError, TimeoutError):
    """No reply arrived within the timeout; a late reply will be discarded."""


class RemoteError(PolybusError):
    """The RPC handler raised; carries the remote exception's type name, message and traceback."""

    def __init__(self, type_name: str, message: str, traceback: str = "") -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.remote_message = message
        self.remote_traceback = traceback


class CapabilityMissing(PolybusError):
    """The transport cannot do what was asked (for example priorities)."""


class Closed(PolybusError):
    """The bus, subscription or worker is closed."""
