"""Benchmarks of outbox-relay against a real PostgreSQL: ``scripts/bench`` (see ``run.py``)."""
