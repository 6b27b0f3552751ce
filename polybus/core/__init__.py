"""The transport-neutral core: patterns, messages, codecs, errors, URLs, the transport interface.

Nothing here imports a broker client.
"""
