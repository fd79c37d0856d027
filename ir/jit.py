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


def source_version(*packages: str) -> str:
    """A hash of every source file of the named packages (and this package, which lowers
    them): any change to the semantics, the lowering or the state layout gives new cache
    keys. The front end names itself, so this layer knows no ISA."""
    import hashlib
    import importlib
    from pathlib import Path
    import dbtlab
    h = hashlib.sha256()
    for name in (__package__, *packages):
        folder = Path(importlib.import_module(name).__file__).parent
        for f in sorted(folder.glob("*.py")):
            h.update(f"{name}/{f.name}\0".encode())
            h.update(f.read_bytes())
    return f"{dbtlab.__version__}+{h.hexdigest()[:16]}"


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
    cache_hits: int = 0
    per_module: list = field(default_factory=list)   # (blocks, seconds)


class JITEngine:
    """MCJIT engine plus the support module (dispatcher and memory slow paths)."""

    def __init__(self, opt_level: int = 0, codegen_opt: int = 0,
                 debug: frozenset[str] = frozenset(), debug_out: TextIO | None = None,
                 cache_dir: str | None = None, use_cache: bool = False,
                 code_version: str = "") -> None:
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
        self.cache = None
        if use_cache:
            from dbtlab.ir.objcache import ObjectCache
            self.cache = ObjectCache(cache_dir)
        cpu, features = host_cpu()
        # code_version: what shapes translated code above this layer (source_version())
        self.cache_prefix = (f"{code_version or source_version()}|{cpu}|{features}|opt{opt_level}|"
                             f"cg{codegen_opt}")
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

    def compile(self, ir_text: str, table_symbol: str, entries: int,
                cache_tag: str = "") -> list[int]:
        """Compile one module (or load its object code from the persistent cache) and
        return the addresses in its table. ``cache_tag`` names the options that shaped
        the IR beyond its text (nothing, today: the text says it all)."""
        import ctypes
        t0 = time.perf_counter()
        if "op" in self.debug:
            self.debug_out.write(f"OP ({table_symbol}):\n{ir_text}\n")
        obj = None
        key = None
        if self.cache is not None and not self.debug & {"op_opt", "out_asm"}:
            key = self.cache.key(self.cache_prefix, cache_tag, ir_text)
            obj = self.cache.get(key)
        if obj is None:
            mod = llvm.parse_assembly(ir_text)
            mod.triple = self.triple
            t1 = time.perf_counter()
            self.stats.parse_seconds += t1 - t0
            mod.verify()
            self._optimise(mod, self.opt_level)
            if "op_opt" in self.debug and self.opt_level > 0:
                self.debug_out.write(f"OP_OPT ({table_symbol}):\n{mod}\n")
            if "out_asm" in self.debug:
                self.debug_out.write(f"OUT_ASM ({table_symbol}):\n"
                                     f"{self.tm.emit_assembly(mod)}\n")
            obj = self.tm.emit_object(mod)
            if key is not None:
                self.cache.put(key, obj)
        else:
            self.stats.cache_hits += 1
        self.ee.add_object_file(llvm.ObjectFileRef.from_data(obj))
        self.ee.finalize_object()
        base = self.ee.get_global_value_address(table_symbol)
        t2 = time.perf_counter()
        addrs = list((ctypes.c_uint64 * entries).from_address(base))
        self.stats.modules += 1
        self.stats.compile_seconds += t2 - t0
        self.stats.ir_bytes += len(ir_text)
        return addrs

    def compile_object(self, ir_text: str, opt_level: int, codegen_opt: int) -> bytes:
        """Optimise and compile a module to relocatable object code (what a worker
        process does for a region; also used in-process)."""
        return compile_object(ir_text, opt_level, codegen_opt, self.triple)

    def add_object(self, obj: bytes, table_symbol: str, entries: int) -> list[int]:
        """Load object code into the engine, link it, return its table's addresses."""
        import ctypes
        t0 = time.perf_counter()
        self.ee.add_object_file(llvm.ObjectFileRef.from_data(obj))
        self.ee.finalize_object()
        base = self.ee.get_global_value_address(table_symbol)
        if not base:
            raise RuntimeError(f"object code has no {table_symbol}")
        self.stats.compile_seconds += time.perf_counter() - t0
        return list((ctypes.c_uint64 * entries).from_address(base))

    def close(self) -> None:
        self.ee.close()


_TMS: dict = {}


def compile_object(ir_text: str, opt_level: int, codegen_opt: int, triple: str | None = None
                   ) -> bytes:
    """Parse, verify, optimise (a fresh pass manager per module) and emit object code.
    Runs in worker processes too: it touches nothing but LLVM."""
    init_llvm()
    tm = _TMS.get(codegen_opt)
    if tm is None:
        cpu, features = host_cpu()
        tm = _TMS[codegen_opt] = llvm.Target.from_default_triple().create_target_machine(
            cpu=cpu, features=features, opt=codegen_opt, reloc="default",
            codemodel="jitdefault")
    mod = llvm.parse_assembly(ir_text)
    mod.triple = triple or llvm.get_process_triple()
    mod.verify()
    if opt_level > 0:
        pto = llvm.create_pipeline_tuning_options(speed_level=min(opt_level, 3))
        pb = llvm.create_pass_builder(tm, pto)
        pb.getModulePassManager().run(mod, pb)
    return tm.emit_object(mod)
