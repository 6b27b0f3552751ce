"""The ``polybus`` commands that operate queues on any broker URL: ``queues``, ``peek``,
``send``, ``listen``, ``purge`` and ``dead-letters``. One module per command; what they share
(the URL, the exit codes, a message as a JSON line) is in ``common``."""
