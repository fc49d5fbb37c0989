"""The scheduled inbound scan (issue 12): one cycle function and the scheduler that calls it.

Imports ports, never adapters: :mod:`outbox_relay.apps.scan` wires the mutagen tag reader in.
"""
