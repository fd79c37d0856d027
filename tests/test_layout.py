"""The house rules: the folder tree installs as one package, and layers keep to themselves.

Dependencies point one way: ``ir/`` (builder, lowerings, CPU state, JIT) knows no ISA and no
OS; ``translator/`` (encodings, semantics, blocks, lifting) knows no OS; ``runtime/`` uses
both; ``analysis/`` reads profiles only. Modules form no import cycles. The graph is read
from the source (every import statement, also those inside functions; only imports for
type checkers, under ``if TYPE_CHECKING:``, are left out), so the rules hold for code that
imports lazily too.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: import package -> folder, as pyproject.toml's package-dir says
FOLDERS = {"dbtlab": "api", "dbtlab.translator": "translator", "dbtlab.ir": "ir",
           "dbtlab.runtime": "runtime", "dbtlab.analysis": "analysis"}
#: layer -> layers it must not import
FORBIDDEN = {
    "ir": {"translator", "runtime", "analysis", "api"},
    "translator": {"runtime", "analysis", "api"},
    "analysis": {"ir", "translator", "runtime"},
}


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    out = {}
    for pkg, folder in FOLDERS.items():
        for f in (root / folder).rglob("*.py"):
            parts = list(f.relative_to(root / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join([pkg, *parts])] = f
    return out


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that module ``name`` imports (a ``from pkg import mod`` counts
    as importing ``pkg.mod``)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m in known and m != name}


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    mods = modules(root)
    return {n: imports_of(n, p, set(mods)) for n, p in mods.items()}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and f"dbtlab.{parts[1]}" in FOLDERS else "api"


def violations(g: dict[str, set[str]]) -> list[str]:
    """Wrong-way imports. The root package itself (``import dbtlab``, for ``__version__``)
    is open to every layer: its ``__init__`` imports nothing until an attribute is used."""
    return sorted(f"{m} imports {d}" for m, deps in g.items() for d in deps
                  if d != "dbtlab" and layer(d) in FORBIDDEN.get(layer(m), ()))


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            strong(v)
    return out


def _a_package_imports_its_own_modules(g: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's ``__init__`` that re-exports its own modules is not a cycle with them:
    leave out the edges from a package to the modules inside it."""
    return {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in g.items()}


def test_layers_import_only_downwards():
    assert violations(graph()) == []


def test_no_import_cycles():
    assert cycles(_a_package_imports_its_own_modules(graph())) == []


def _copy_tree(dst_root: Path) -> None:
    for folder in FOLDERS.values():
        for f in (ROOT / folder).rglob("*.py"):
            dst = dst_root / f.relative_to(ROOT)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(f.read_text())


@pytest.mark.parametrize("where, line, expected", [
    ("ir/llvm_emit.py", "from dbtlab.translator.insn import Insn",
     "dbtlab.ir.llvm_emit imports dbtlab.translator.insn"),
    ("ir/state.py", "    from dbtlab.runtime.linux.memory import GuestMemory",
     "dbtlab.ir.state imports dbtlab.runtime.linux.memory"),
    ("translator/block.py", "import dbtlab.runtime.config",
     "dbtlab.translator.block imports dbtlab.runtime.config"),
    ("analysis/graph.py", "from dbtlab.ir.state import EXIT_NAMES",
     "dbtlab.analysis.graph imports dbtlab.ir.state"),
])
def test_the_layering_check_catches_a_forbidden_import(tmp_path, where, line, expected):
    """Add one wrong-way import to a copy of the tree: the check names it."""
    _copy_tree(tmp_path)
    target = tmp_path / where
    target.write_text(target.read_text() + f"\n\ndef _planted():\n    {line.strip()}\n")
    assert violations(graph(tmp_path)) == [expected]


def test_the_cycle_check_catches_a_cycle(tmp_path):
    _copy_tree(tmp_path)
    cfg = tmp_path / "runtime" / "config.py"   # imported by the machine: make it import back
    cfg.write_text(cfg.read_text() + "\n\ndef _planted():\n    from dbtlab.runtime import machine\n")
    found = cycles(_a_package_imports_its_own_modules(graph(tmp_path)))
    assert any({"dbtlab.runtime.config", "dbtlab.runtime.machine"} <= set(c) for c in found)


def test_every_package_folder_is_installed():
    """A folder with an ``__init__.py`` that pyproject.toml does not list would be missing
    from a regular install (editable installs hide it)."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert cfg["package-dir"] == {k: v for k, v in FOLDERS.items()}
    listed = set(cfg["packages"])
    on_disk = {n for n, p in modules().items() if p.name == "__init__.py"}
    assert on_disk == listed


def test_nothing_in_the_root_shadows_the_installed_package():
    """``python -m pytest`` from the root puts the root first on sys.path: a folder there
    named like the package would hide the installed one (and its subpackages)."""
    assert not (ROOT / "dbtlab").exists()
    assert not (ROOT / "__init__.py").exists()
