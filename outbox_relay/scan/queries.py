"""The scan's named SQL statements (``outbox_relay/db/scan.sql``), parsed once at import."""

from __future__ import annotations

from importlib import resources
from types import MappingProxyType
from typing import Final

from outbox_relay.db.queries import parse

Q: Final = MappingProxyType(
    parse((resources.files("outbox_relay.db") / "scan.sql").read_text(encoding="utf-8"))
)
