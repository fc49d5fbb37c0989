"""Composition roots: each module wires one process from :class:`~outbox_relay.config.Settings`."""
