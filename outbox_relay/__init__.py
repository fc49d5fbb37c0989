"""outbox-relay: a transactional outbox from PostgreSQL to Inngest that survives outages.

Folders show the architecture:

- ``db``       — migrations and the named SQL queries every other part runs
- ``domain``   — ISRC rules, Qdrant point ids, the event shape (pure, no I/O)
- ``write``    — the write side: the library API and the enqueue helpers for applications
- ``relay``    — the relay loop: claim, check, publish, finalise
- ``inngest``  — the Event API publisher and the stand-in used by tests, benchmarks and the demo
- ``qdrant``   — the existence check against the index
- ``http``     — the relay's health, metrics and admin surface
- ``cli``      — the ``outbox-relay`` command
- ``embedded`` — throwaway local servers for the demo, tests and benchmarks
"""

__version__ = "0.1.0"
