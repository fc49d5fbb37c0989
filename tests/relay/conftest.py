"""The relay harness lives in :mod:`relay.harness`, registered for the whole suite by the root
conftest; this re-export keeps ``from .conftest import Harness`` working in this folder."""

from outbox_relay.testing.relay_process import RelayProcess

from .harness import FAST, Harness, RunningRelay, wait_until

__all__ = ["FAST", "Harness", "RelayProcess", "RunningRelay", "wait_until"]
