"""The conformance suite and the pytest plugin, importable by third-party transports.

Run the suite on any URL: ``pytest --pyargs polybus.testing.conformance --polybus-url=URL``.
"""
