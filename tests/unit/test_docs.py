"""The README's configuration table against the settings the code reads.

A variable added to ``Settings`` without a row in the table, or a default changed in one place
only, fails here: the table is the only place a user learns what they can set.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import AliasChoices
from pydantic_core import PydanticUndefined

from outbox_relay.config import Settings

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def _configuration_rows() -> dict[str, str]:
    """Variable name → the default cell, for every row of the README's configuration table.

    A row may name several variables (``A`` / ``B``) with as many defaults (``1`` / ``2``).
    """
    section = README.read_text().split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        names = re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0])
        defaults = cells[-1].split(" / ") if len(names) > 1 else [cells[-1]]
        assert len(defaults) == len(names), f"one default per variable: {line}"
        for name, default in zip(names, defaults, strict=True):
            assert name not in rows, f"{name} is in the table twice"
            rows[name] = default
    return rows


def _variables() -> dict[str, object]:
    """Environment variable → its default (PydanticUndefined when computed at start-up)."""
    found: dict[str, object] = {}
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        assert isinstance(alias, AliasChoices), field
        name = alias.choices[0]
        assert isinstance(name, str)
        found[name] = PydanticUndefined if field.default_factory else field.default
    return found


def _spellings(value: object) -> set[str]:
    spelled = {f"`{value}`"}
    if isinstance(value, bool):
        spelled.add(f"`{str(value).lower()}`")  # as an environment variable is written
    if isinstance(value, float) and value.is_integer():
        spelled.add(f"`{int(value)}`")
    return spelled


def test_the_configuration_table_lists_every_variable_with_its_default() -> None:
    rows = _configuration_rows()
    variables = _variables()
    assert sorted(set(variables) - set(rows)) == [], "settings missing from the README's table"
    assert sorted(set(rows) - set(variables)) == [], "the README lists variables nobody reads"
    for name, default in variables.items():
        cell = rows[name]
        if default is None:
            # unset, required, or a fallback described in words: never a value of its own
            assert re.search(r"unset|required|dev", cell), f"{name}: {cell}"
        elif default is not PydanticUndefined:
            assert cell in _spellings(default), f"{name}: README says {cell}, code says {default!r}"
