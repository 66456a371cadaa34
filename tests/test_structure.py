"""The package's import structure: no import cycle between the modules of ``nmt``, the commands of
``nmt/commands`` independent of one another (each imports shared code, never another command), and one module
that turns text into ids (`nmt.data.encoding`: the tokenizer's encode methods are called there only).

The graph is read from the source with ``ast``, so nothing is imported: an edge is any ``import nmt.x`` or
``from nmt.x import y`` (relative ones resolved) anywhere in a module, inside functions too; imports under
``if TYPE_CHECKING:`` are left out, as they never run. ``from package import name`` is an edge to the
submodule ``package.name`` when there is one, else to the package itself. Importing a submodule also runs its
packages' ``__init__``, but that is not counted as an edge: a package re-exporting its submodules is no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "nmt"
SHARED_COMMAND_MODULES = {"nmt.commands", "nmt.commands.options"}
"""Modules of ``nmt/commands`` that hold shared code, not a command: a command may import these."""
ENCODER_MODULE = "nmt.data.encoding"
"""The one module that calls the tokenizer's encode methods: tokenizing, the blank-line rule, cutting."""
TOKENIZER_MODULE = "nmt.data.tokenizer"
"""The one module that uses SentencePiece itself."""
ENCODE_METHODS = frozenset({"encode_src", "encode_tgt"})


def module_names(root: Path = PACKAGE) -> dict[str, Path]:
    """{dotted module name: file} of every module of the package (a package is its ``__init__.py``)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of a module, at any depth, except those under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:  # the else branch runs
                visit(child)
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The module a ``from … import`` names, relative imports resolved against the importing module."""
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """{module: the modules of the package it imports}."""
    modules = module_names(root)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = _absolute(name, is_package, node)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a → … → a) through each strongly connected component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan's algorithm; the graph is small enough for recursion
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [_cycle_through(graph, set(c)) for c in components]


def _cycle_through(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """The shortest cycle from the first module of a strongly connected component back to itself."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    following.append(w)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a strongly connected component always has one


def test_the_graph_reader_sees_every_kind_of_import(tmp_path):
    root = tmp_path / "nmt"
    (root / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from nmt.b import f\nimport nmt.sub.c\n",
        "b.py": "def f():\n    from .sub import c\n",
        "sub/__init__.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from nmt import a\n",
        "sub/c.py": "from .. import a\nfrom . import d\n",
        "sub/d.py": "from nmt.sub import NAME\n",
    }
    for name, text in files.items():
        (root / name).write_text(text)
    assert import_graph(root) == {
        "nmt": set(),
        "nmt.a": {"nmt.b", "nmt.sub.c"},
        "nmt.b": {"nmt.sub.c"},
        "nmt.sub": set(),
        "nmt.sub.c": {"nmt.a", "nmt.sub.d"},
        "nmt.sub.d": {"nmt.sub"},
    }
    assert find_cycles(import_graph(root)) == [["nmt.a", "nmt.sub.c", "nmt.a"]]


def test_no_import_cycle():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles in nmt:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_commands_do_not_import_each_other():
    graph = import_graph()
    commands = {name for name in graph if name.startswith("nmt.commands.")} - SHARED_COMMAND_MODULES
    found = [f"{name} imports {other}" for name in sorted(commands) for other in sorted(graph[name] & commands)]
    assert not found, "a command imports another command (move the shared code out of nmt/commands):\n" + "\n".join(
        found
    )


def encode_calls(root: Path = PACKAGE) -> dict[str, list[int]]:
    """{module: the lines where it uses ``….encode_src`` or ``….encode_tgt`` (called, or handed on as a function)}
    of the modules that do."""
    found: dict[str, list[int]] = {}
    for name, path in module_names(root).items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Attribute) and node.attr in ENCODE_METHODS:
                found.setdefault(name, []).append(node.lineno)
    return found


def test_the_encode_call_finder_sees_every_call(tmp_path):
    root = tmp_path / "nmt"
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "a.py").write_text("def f(tok, t):\n    return tok.encode_src([t]), g(tok.encode_tgt)\n")
    (root / "b.py").write_text("def encode_src(x):\n    return x.encode()\n")
    assert encode_calls(root) == {"nmt.a": [2, 2]}


def test_only_the_encoder_module_tokenizes_text():
    """Translate, the server, embed, plot-attention, score, the shortlist and the training corpora all get their
    ids from `nmt.data.encoding`, so that a blank line, an over-long one and the warning are the same
    everywhere."""
    others = {name: lines for name, lines in encode_calls().items() if name != ENCODER_MODULE}
    assert not others, f"text tokenized outside {ENCODER_MODULE} (use its functions):\n" + "\n".join(
        f"{name}: lines {lines}" for name, lines in sorted(others.items())
    )
    sentencepiece = {
        name
        for name, path in module_names().items()
        for node in _imports(ast.parse(path.read_text(encoding="utf-8")))
        if any(
            (alias.name if isinstance(node, ast.Import) else node.module or "").startswith("sentencepiece")
            for alias in node.names
        )
    }
    assert sentencepiece == {TOKENIZER_MODULE}, f"SentencePiece used outside {TOKENIZER_MODULE}: {sentencepiece}"


LIGHTNING_INTERNALS = "nmt.training.lightning_internals"
"""The one module that may use Lightning's private names (each use tested in tests/test_lightning_internals.py)."""


def private_names(path: Path) -> list[str]:
    """`obj._name` on anything but self/cls (a namedtuple's `_replace` aside) and `from lightning… import _name`,
    with their lines."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if node.attr != "_replace" and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f"{node.lineno}: {ast.unparse(node)}")
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "lightning":
            found += [f"{node.lineno}: import {alias.name}" for alias in node.names if alias.name.startswith("_")]
    return found


def test_only_the_adapter_uses_lightning_internals():
    lightning_users = {
        name: path
        for name, path in module_names().items()
        if name != LIGHTNING_INTERNALS and "lightning" in path.read_text(encoding="utf-8")
    }
    found = [f"{name}:{use}" for name, path in sorted(lightning_users.items()) for use in private_names(path)]
    assert not found, f"private names outside {LIGHTNING_INTERNALS}:\n" + "\n".join(found)
    assert private_names(module_names()[LIGHTNING_INTERNALS])  # the check sees what it looks for
