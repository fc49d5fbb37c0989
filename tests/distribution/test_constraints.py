"""constraints.txt pins every distribution the project installs, transitive ones included.

pip's ``-c constraints.txt`` only constrains what it lists: a dependency of a dependency left
out is installed at whatever version is newest that day, and two bootstraps (or two images)
differ. Here the requirements of ``outbox-relay[dev]`` (what scripts/bootstrap installs) are
followed through the installed distributions' metadata, markers evaluated, and each one reached
must be pinned, at the version installed.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
# The bootstrap's extras; `containers` (testcontainers) is installed by hand, never by it.
EXTRAS = frozenset({"dev"})


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not pinned with =="
            pins[_canonical(name)] = version.strip()
    return pins


def _installed_closure() -> dict[str, str]:
    """Every distribution the project's requirements reach, with its installed version."""
    found: dict[str, str] = {}
    todo: list[tuple[str, frozenset[str]]] = [("outbox-relay", EXTRAS)]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        dist = metadata.distribution(name)
        found[name] = dist.version
        for spec in dist.requires or []:
            requirement = Requirement(spec)
            wanted = any(
                requirement.marker is None or requirement.marker.evaluate({"extra": extra})
                for extra in extras | {""}
            )
            if wanted:
                todo.append((_canonical(requirement.name), frozenset(requirement.extras)))
    found.pop("outbox-relay")
    return found


def test_every_installed_dependency_is_pinned_at_its_installed_version() -> None:
    pins = _pins()
    installed = _installed_closure()
    unpinned = sorted(f"{name}=={version}" for name, version in installed.items()
                      if name not in pins)  # fmt: skip
    assert not unpinned, f"installed but not in constraints.txt (add these lines): {unpinned}"
    differ = sorted(f"{name}: installed {version}, pinned {pins[name]}"
                    for name, version in installed.items() if pins[name] != version)  # fmt: skip
    assert not differ, f"installed versions differ from constraints.txt: {differ}"
