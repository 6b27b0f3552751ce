"""Transports: one module per broker, each implementing ``polybus.core.transport.Transport``."""
