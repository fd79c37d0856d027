"""dbtlab: dynamic binary translation of RISC-V Linux programs, for research.

This package (the repository's ``api/`` folder) holds the public API: ``run``, ``Result``,
``Machine``, the configurations and ``dbtlab.snapshot``. The code lives in four subpackages,
installed from the repository's root folders: ``dbtlab.ir`` (abstract builder, its lowerings,
CPU-state layout, JIT; no ISA, no OS), ``dbtlab.translator`` (encodings, semantics, blocks;
no OS), ``dbtlab.runtime`` (machine, accelerators, Linux, VM services, monitor, oracle, CLI)
and ``dbtlab.analysis`` (reads profiles).
"""

__version__ = "0.1.0"

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
        from dbtlab.runtime.linux.loader import StartConfig
        return StartConfig
    if name == "analysis":
        import importlib
        return importlib.import_module("dbtlab.analysis")
    raise AttributeError(f"module 'dbtlab' has no attribute {name!r}")
