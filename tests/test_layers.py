"""The rooms depend on each other one way: a room imports only rooms below it (docs/architecture.md, Dependencies).

Every import of every module under ``src/acrlocal`` counts: at the top, inside a function, under ``TYPE_CHECKING``,
and a module named by a string (``importlib.import_module`` of a constant). What a room needs from a room above it
is handed in when the server is assembled (``server.py``), or moves down into the lower room. ``KNOWN`` (upward
imports still there: none) may only shrink: a new entry fails, and so does an entry that no longer holds (delete
it).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import acrlocal

# Lowest first. Rooms in one tuple are independent: neither imports the other.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("base",),  # the top-level modules: errors, files, config, inbound, listeners, lockout, timeouts, tls, ...
    ("storage",),
    ("rbac",),
    ("identity",),
    ("compute", "registry"),
    ("arm",),
    ("server",),  # assembles the rooms
    ("cli",),  # acrlocal, which runs the server (acrlocal up)
)

# Upward imports still to remove, as "importer -> imported" (none left: keep it so).
KNOWN: frozenset[str] = frozenset()

PACKAGE = Path(acrlocal.__file__).parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ("acrlocal", *path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def room(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "base"
    if (PACKAGE / parts[1]).is_dir():
        return parts[1]
    return {"server": "server", "__main__": "cli"}.get(parts[1], "base")


def imports(module: str) -> Iterator[str]:
    """Every acrlocal module ``module`` imports, in any place, or names in a string constant."""
    path = MODULES[module]
    yield from imports_in(path.read_text(), module, is_package=path.name == "__init__.py")


def imports_in(source: str, module: str, *, is_package: bool = False) -> Iterator[str]:
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source, module)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join([*package[: len(package) - node.level + 1], *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            for alias in node.names:
                yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in MODULES:
            yield node.value


def level(name: str) -> int:
    return next(i for i, rooms in enumerate(LAYERS) if name in rooms)


def upward_imports() -> set[str]:
    found = set()
    for module in MODULES:
        for imported in imports(module):
            if imported not in MODULES:
                continue
            here, there = room(module), room(imported)
            if here != there and level(there) >= level(here):
                found.add(f"{module} -> {imported}")
    return found


def test_every_room_has_a_layer() -> None:
    rooms = {room(module) for module in MODULES}
    layered = {name for rooms_ in LAYERS for name in rooms_}
    assert rooms <= layered, f"rooms with no place in LAYERS: {sorted(rooms - layered)}"


def test_imports_go_down() -> None:
    found = upward_imports()
    new = sorted(found - KNOWN)
    gone = sorted(KNOWN - found)
    assert not new, (
        "imports of a room from a room below it or beside it (hand what is needed in when the server is assembled, "
        "or move it down):\n  " + "\n  ".join(new))
    assert not gone, "upward imports that are gone: delete them from KNOWN:\n  " + "\n  ".join(gone)


def test_the_walk_sees_imports() -> None:
    """The walk finds imports at the top, relative ones, in a function, under TYPE_CHECKING, and modules named by a
    string; a name imported from a package is the module of that name when there is one."""
    source = """
from typing import TYPE_CHECKING
import acrlocal.errors
from . import paths
from .errors import RegistryError
from acrlocal import inbound, __version__
if TYPE_CHECKING:
    from acrlocal.arm.store import ArmStore
def later():
    from acrlocal.identity import tokens
TABLES = ("acrlocal.compute.store", "not a module")
"""
    found = set(imports_in(source, "acrlocal.registry.http"))
    assert found >= {"acrlocal.errors", "acrlocal.registry.paths", "acrlocal.registry.errors", "acrlocal.inbound",
                     "acrlocal", "acrlocal.arm.store", "acrlocal.identity.tokens", "acrlocal.compute.store"}
    assert room("acrlocal.registry.http") == "registry" and room("acrlocal.inbound") == "base"
    assert room("acrlocal.server") == "server" and room("acrlocal.__main__") == "cli"
