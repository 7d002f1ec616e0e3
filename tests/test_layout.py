"""The package's shape, as the README's architecture section promises it.

* No import cycle anywhere under ``fleetscan/`` — counting imports inside functions too (a lazy
  import that only hides a cycle is still one) and the package ``__init__`` modules an import
  runs, but not imports that only type checkers see.
* The library never imports the command layer (``fleetscan._commands``).
* The scanner never imports the emulator: only the emulator itself and the commands that serve or
  demo it do.

The imports are read from the source with :mod:`ast`, so the test sees every import a module can
make, whichever code path would run it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "fleetscan"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node, except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking_only(child):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def imported(name: str) -> set[str]:
    """The fleetscan modules ``name`` imports (the exact modules named in its imports)."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    package = name if is_package(name) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _nodes(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            found.add(origin)
            # `from . import x` may name a submodule x.
            found.update(f"{origin}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    return {module for module in found if module in MODULES and module != name}


def ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def dependencies(name: str) -> set[str]:
    """What importing ``name`` makes Python run: each module it imports, and the package
    ``__init__`` of each one that is not already a package ``name`` lives in."""
    own = set(ancestors(name))
    deps: set[str] = set()
    for target in imported(name):
        deps.add(target)
        deps.update(a for a in ancestors(target) if a not in own and a in MODULES)
    deps.discard(name)
    return deps


GRAPH = {name: dependencies(name) for name in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle (its modules in import order, first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def test_the_reader_sees_every_kind_of_import() -> None:
    """The graph is built from what the checks below rely on: a relative import, a lazy import
    inside a function, and importlib with a literal name all count."""
    assert "fleetscan._sinks._s3io" in GRAPH["fleetscan._sinks._checkpoint"]  # relative
    assert "fleetscan._commands._progress" in GRAPH["fleetscan._commands.scan"]  # importlib
    assert "fleetscan.emulator" in GRAPH["fleetscan._commands.demo"]  # inside a function


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle() -> None:
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize(
    ("importer_prefix", "forbidden", "allowed_prefixes"),
    [
        # The library never imports a command.
        ("fleetscan", "fleetscan._commands", ("fleetscan._commands", "fleetscan.__main__")),
        # The scanner never imports the emulator; the emulator's own CLI and the commands may.
        ("fleetscan", "fleetscan.emulator", ("fleetscan.emulator", "fleetscan._commands")),
    ],
)
def test_layers(importer_prefix: str, forbidden: str, allowed_prefixes: tuple[str, ...]) -> None:
    offenders = sorted(
        f"{name} imports {target}"
        for name, deps in GRAPH.items()
        if name.startswith(importer_prefix)
        and not any(name == p or name.startswith(p + ".") for p in allowed_prefixes)
        for target in deps
        if target == forbidden or target.startswith(forbidden + ".")
    )
    assert offenders == []


def test_every_command_has_its_module() -> None:
    from fleetscan._commands import COMMANDS

    for command in COMMANDS:
        assert f"fleetscan._commands.{command}" in MODULES, command
