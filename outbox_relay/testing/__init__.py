"""Test equipment: never imported by product modules.

What cannot run on the machines this project is tested on, or what tests and benchmarks need to
drive the real parts, lives here and only here:

- :mod:`.postgres`: a throwaway local PostgreSQL from the machine's binaries (tests, benchmarks,
  the demo).
- :mod:`.inngest`: a faithful stand-in of Inngest's Event API, with fault switches, which also
  plays Inngest's executor for SDK apps (sync, runs, retries, flow control).
- :mod:`.receiver`: a minimal Event API receiver that only counts and acknowledges (B1 measures
  the relay's own cost against it).
- :mod:`.fakes`: in-memory implementations of the relay's ports, for the fast tier of tests.
- :mod:`.relay_process`: the one way to start relay processes from tests and benchmarks.
- :mod:`.schema`: ``db/schema.sql`` regenerated from the migrations (``scripts/schema``) and
  the schema-only dumps its test compares.

The import rules in ``pyproject.toml`` (import-linter) allow only ``outbox_relay.cli.demo``,
``tests/`` and ``bench/`` to import this package.
"""
