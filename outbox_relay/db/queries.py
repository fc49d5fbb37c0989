"""The named SQL statements of ``queries.sql``, parsed once at import.

Keeping SQL in a ``.sql`` file lets reviewers read it as SQL, lets EXPLAIN tests run exactly
what production runs, and keeps values out of string formatting.
"""

from __future__ import annotations

import re
from importlib import resources
from types import MappingProxyType
from typing import Final

_BLOCK = re.compile(r"^-- name: (?P<name>[a-z_]+)\s*$", re.MULTILINE)


def parse(text: str) -> dict[str, str]:
    """Splits ``-- name: x`` blocks into ``{name: sql}``; comment lines are kept out."""
    names = list(_BLOCK.finditer(text))
    queries: dict[str, str] = {}
    for match, following in zip(names, [*names[1:], None], strict=True):
        body = text[match.end() : following.start() if following else len(text)]
        sql = "\n".join(
            line
            for line in body.splitlines()
            if line.strip() and not line.lstrip().startswith("--")
        ).strip()
        if match["name"] in queries:
            raise ValueError(f"queries.sql: the name {match['name']!r} is used twice")
        queries[match["name"]] = sql.rstrip(";")
    return queries


QUERIES: Final = MappingProxyType(
    parse((resources.files("outbox_relay.db") / "queries.sql").read_text(encoding="utf-8"))
)
