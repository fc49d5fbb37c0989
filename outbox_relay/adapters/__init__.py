"""Adapters: the real implementations of :mod:`outbox_relay.ports` (Inngest, Qdrant, ...)."""
