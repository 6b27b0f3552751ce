"""The conformance suite: every rule of DESIGN.md's semantics, run on every transport and API."""
