"""The ingestion worker: the Inngest functions that index tracks in Qdrant (issue 11).

Imports ports, never adapters: :mod:`outbox_relay.apps.worker` wires it.
"""
