"""dbtlab: dynamic binary translation of RISC-V Linux programs, for research.

The code lives in four subpackages, installed from the repository's root folders:
``dbtlab.translator`` (ISA front end, blocks), ``dbtlab.ir`` (abstract builder and its
lowerings, JIT), ``dbtlab.runtime`` (ELF loader, memory, syscalls, accelerators, CLI) and
``dbtlab.analysis`` (profiles, graphs, plots).
"""

from pathlib import Path as _Path

__version__ = "0.1.0"

# In a checkout this folder shadows the installed package whenever the repository root is
# first on sys.path (``python -m pytest`` run there), and the subpackages are not inside it
# but beside it: let imports of ``dbtlab.ir`` and the rest find the root's folders.
_root = _Path(__file__).resolve().parent.parent
if (_root / "pyproject.toml").is_file() and (_root / "ir" / "__init__.py").is_file():
    __path__.append(str(_root))  # noqa: F821 (a package's __path__)
del _root, _Path

__all__ = ["run", "Result", "Machine", "RunConfig", "StartConfig", "analysis", "__version__"]


def __getattr__(name: str):
    """The public API, imported on first use (``import dbtlab`` stays cheap)."""
    if name in ("run", "Result"):
        from dbtlab import api
        return getattr(api, name)
    if name == "Machine":
        from dbtlab.runtime.machine import Machine
        return Machine
    if name == "RunConfig":
        from dbtlab.runtime.config import RunConfig
        return RunConfig
    if name == "StartConfig":
        from dbtlab.runtime.loader import StartConfig
        return StartConfig
    if name == "analysis":
        import importlib
        return importlib.import_module("dbtlab.analysis")
    raise AttributeError(f"module 'dbtlab' has no attribute {name!r}")
