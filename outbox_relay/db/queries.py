"""The named SQL statements of this folder's ``.sql`` files, parsed once at import.

Keeping SQL in ``.sql`` files lets reviewers read it as SQL, lets EXPLAIN tests run exactly
what production runs, and keeps values out of string formatting. Every ``.sql`` file of
``outbox_relay/db`` but ``schema.sql`` (the current schema, for reading) holds ``-- name: x``
blocks, one file per area: ``queries.sql`` (the relay and the operator's tools), ``write.sql``
(the enqueue helpers and the write API), ``migrate.sql`` (the migrator's own bookkeeping),
``demo.sql`` (what the demo shows), ``scan.sql`` (the scan), ``ingestion.sql`` (the worker),
``ui.sql`` (the admin page).
A name is unique across all of them.

Statements are written with asyncpg's ``$1, $2, ...`` parameters. The psycopg helpers run the
same text through :func:`psycopg_form`, so both drivers send the same statement.
"""

from __future__ import annotations

import re
from importlib import resources
from importlib.resources.abc import Traversable
from types import MappingProxyType
from typing import Final

__all__ = ["QUERIES", "load", "parse", "psycopg_form"]

_BLOCK = re.compile(r"^-- name: (?P<name>[a-z_]+)\s*$", re.MULTILINE)
_PARAMETER = re.compile(r"\$(?P<number>\d+)")
# Not named queries: the current schema, written by scripts/schema for people to read.
_NOT_QUERIES: Final = frozenset({"schema.sql"})


def parse(text: str, source: str = "queries.sql") -> dict[str, str]:
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
            raise ValueError(f"{source}: the name {match['name']!r} is used twice")
        queries[match["name"]] = sql.rstrip(";")
    return queries


def load(folder: Traversable | None = None) -> dict[str, str]:
    """Every named query of the ``.sql`` files of ``folder`` (default: this package's).

    Refuses a name used twice, in one file or in two.
    """
    folder = folder or resources.files("outbox_relay.db")
    queries: dict[str, str] = {}
    origin: dict[str, str] = {}
    for file in sorted(folder.iterdir(), key=lambda entry: entry.name):
        if not file.name.endswith(".sql") or file.name in _NOT_QUERIES:
            continue
        for name, sql in parse(file.read_text(encoding="utf-8"), file.name).items():
            if name in queries:
                raise ValueError(
                    f"{file.name}: the name {name!r} is already used in {origin[name]}"
                )
            queries[name] = sql
            origin[name] = file.name
    return queries


def psycopg_form(sql: str) -> str:
    """``sql`` with psycopg's ``%s`` placeholders for asyncpg's ``$1, $2, ...``.

    Only a statement that uses each parameter once, in order, has a positional ``%s`` form;
    anything else is refused rather than silently reordered. A literal ``%`` is doubled.
    """
    numbers = [int(match["number"]) for match in _PARAMETER.finditer(sql)]
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError(
            f"a statement with parameters {numbers} has no positional psycopg form: "
            "use each of $1, $2, ... once, in order"
        )
    return _PARAMETER.sub("%s", sql.replace("%", "%%"))


QUERIES: Final = MappingProxyType(load())
