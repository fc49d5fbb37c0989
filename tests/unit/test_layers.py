"""The import rules cover the whole package: a new module cannot slip past them.

import-linter's forbidden contracts name their source modules; the one that keeps the test
equipment out of the product must name every product module, or a new one would be unchecked.
"""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path

import outbox_relay

ROOT = Path(__file__).resolve().parents[2]
TEST_EQUIPMENT_RULE = "Product modules never import the test equipment (only the demo may)"
# The test equipment itself, and the one product module allowed to use it.
EXEMPT = ("outbox_relay.testing", "outbox_relay.cli.demo")


def _contract(name: str) -> dict[str, object]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    [contract] = [c for c in contracts if c["name"] == name]
    return contract


def _covered(module: str, sources: list[str]) -> bool:
    return any(module == s or module.startswith(s + ".") for s in sources)


def test_the_test_equipment_rule_names_every_product_module() -> None:
    sources = _contract(TEST_EQUIPMENT_RULE)["source_modules"]
    assert isinstance(sources, list)
    modules = [
        info.name
        for info in pkgutil.walk_packages(outbox_relay.__path__, "outbox_relay.")
        if not _covered(info.name, list(EXEMPT))
    ]
    assert modules, "found no modules: the walk is broken"
    unchecked = [m for m in modules if not _covered(m, sources)]
    assert unchecked == [], f"add these to the contract {TEST_EQUIPMENT_RULE!r} in pyproject.toml"
