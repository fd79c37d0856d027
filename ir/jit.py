"""The JIT engine: the one object that owns LLVM for an accelerator.

Lifecycle of translated code, as in numba's codegen: a module's IR text is *compiled*
(parsed, verified, optionally optimised, added to the execution engine, finalised), then its
table of addresses is read; nothing is added to a module after that.

MCJIT or LLJIT? We use MCJIT. It never frees the code of a removed module, but freeing is
only ever needed when guest code is invalidated, and LLJIT's per-library unloading would
require every chain slot and jump-cache entry into the library to be cleared first (a
dangling slot crashes the process) and never reuses a library name. Instead we bound the
code cache and, when it is full, *flush* the whole engine at once (a fresh MCJIT engine),
exactly as QEMU's tb_flush does: between dispatcher runs, with no chain left to worry about.
MCJIT also loads object files, which the persistent translation cache needs.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

import llvmlite.binding as llvm

from dbtlab.ir.env import (H_GET_FFLAGS, H_PROF_EDGE, H_RM_POP, H_RM_PUSH, H_SET_FFLAGS,
                           H_SET_FRM)
from dbtlab.ir.state import NUM_EXITS
from dbtlab.ir.support_ir import support_ir

log = logging.getLogger(__name__)

_initialised = False


def init_llvm() -> None:
    global _initialised
    if not _initialised:
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        _initialised = True


def _libc_symbol(name: str) -> int:
    import ctypes
    return ctypes.cast(getattr(ctypes.CDLL(None), name), ctypes.c_void_p).value


def host_cpu() -> tuple[str, str]:
    """(CPU name, feature string): part of every cache key for native code."""
    init_llvm()
    return llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()


@dataclass
class JITStats:
    modules: int = 0
    compile_seconds: float = 0.0     # parse + verify + passes + codegen
    parse_seconds: float = 0.0
    flushes: int = 0
    ir_bytes: int = 0
    per_module: list = field(default_factory=list)   # (blocks, seconds)


class JITEngine:
    """MCJIT engine plus the support module (dispatcher and memory slow paths)."""

    def __init__(self, opt_level: int = 0, codegen_opt: int = 0,
                 debug: frozenset[str] = frozenset(), debug_out: TextIO | None = None) -> None:
        init_llvm()
        import platform
        if platform.machine() not in ("x86_64", "AMD64"):
            raise RuntimeError("the llvm accelerator needs an x86-64 host (it keeps the guest "
                               "FP rounding mode and flags in MXCSR); use --accel interp")
        self.opt_level = opt_level
        self.codegen_opt = codegen_opt
        self.debug = debug
        self.debug_out = debug_out or sys.stderr
        self.triple = llvm.get_process_triple()
        self.stats = JITStats()
        self.generation = 0
        self._new_engine()

    def _target_machine(self):
        cpu, features = host_cpu()
        target = llvm.Target.from_default_triple()
        return target.create_target_machine(cpu=cpu, features=features, opt=self.codegen_opt,
                                            reloc="default", codemodel="jitdefault")

    def _new_engine(self) -> None:
        # MCJIT takes ownership of its target machine (closing the engine frees it), so
        # every engine gets its own
        self.tm = self._target_machine()
        llvm.add_symbol("__sigsetjmp", _libc_symbol("__sigsetjmp"))
        support = llvm.parse_assembly(support_ir())
        support.triple = self.triple
        support.verify()
        self._optimise(support, 2)
        self.ee = llvm.create_mcjit_compiler(support, self.tm)
        self.ee.finalize_object()
        self.enter_address = self.ee.get_function_address("dbt_enter")
        #: environment helper index -> address (exit stubs, FP helpers)
        self.helpers = {n: self.ee.get_function_address(f"dbt_exit_{n}")
                        for n in range(NUM_EXITS)}
        for idx, name in ((H_GET_FFLAGS, "dbt_get_fflags"), (H_SET_FFLAGS, "dbt_set_fflags"),
                          (H_SET_FRM, "dbt_set_frm"), (H_RM_PUSH, "dbt_rm_push"),
                          (H_RM_POP, "dbt_rm_pop"), (H_PROF_EDGE, "dbt_prof_edge")):
            self.helpers[idx] = self.ee.get_function_address(name)
        self.generation += 1

    def flush(self) -> None:
        """Drop all translated code (the caller drops every pointer into it first)."""
        self.ee.close()
        self.stats.flushes += 1
        self._new_engine()

    def _optimise(self, mod, level: int) -> None:
        if level <= 0:
            return
        pto = llvm.create_pipeline_tuning_options(speed_level=min(level, 3))
        pb = llvm.create_pass_builder(self.tm, pto)
        mpm = pb.getModulePassManager()     # a fresh pass manager per module (FACTS.md)
        mpm.run(mod, pb)

    def compile(self, ir_text: str, table_symbol: str, entries: int) -> list[int]:
        """Compile one module and return the addresses in its table."""
        t0 = time.perf_counter()
        if "op" in self.debug:
            self.debug_out.write(f"OP ({table_symbol}):\n{ir_text}\n")
        mod = llvm.parse_assembly(ir_text)
        mod.triple = self.triple
        t1 = time.perf_counter()
        mod.verify()
        self._optimise(mod, self.opt_level)
        if "op_opt" in self.debug and self.opt_level > 0:
            self.debug_out.write(f"OP_OPT ({table_symbol}):\n{mod}\n")
        if "out_asm" in self.debug:
            self.debug_out.write(f"OUT_ASM ({table_symbol}):\n{self.tm.emit_assembly(mod)}\n")
        self.ee.add_module(mod)
        self.ee.finalize_object()
        base = self.ee.get_global_value_address(table_symbol)
        t2 = time.perf_counter()
        import ctypes
        addrs = list((ctypes.c_uint64 * entries).from_address(base))
        self.stats.modules += 1
        self.stats.parse_seconds += t1 - t0
        self.stats.compile_seconds += t2 - t0
        self.stats.ir_bytes += len(ir_text)
        return addrs

    def close(self) -> None:
        self.ee.close()
