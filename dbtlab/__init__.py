"""dbtlab: dynamic binary translation of RISC-V Linux programs, for research.

The code lives in four subpackages, installed from the repository's root folders:
``dbtlab.translator`` (ISA front end, blocks), ``dbtlab.ir`` (abstract builder and its
lowerings, JIT), ``dbtlab.runtime`` (ELF loader, memory, syscalls, accelerators, CLI) and
``dbtlab.analysis`` (profiles, graphs, plots).
"""

__version__ = "0.1.0"
