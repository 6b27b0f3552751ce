"""The blocking API: the asyncio core driven from a background event-loop thread per bus."""
