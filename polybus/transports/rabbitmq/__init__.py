"""RabbitMQ transport (``amqp://``, ``amqps://``); see ``docs/rabbitmq.md`` for the mapping."""

from polybus.transports.rabbitmq.transport import RabbitMQTransport

__all__ = ["RabbitMQTransport"]
