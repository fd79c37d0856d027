"""``--accel llvm``: guest blocks lifted to LLVM IR, JIT-compiled, chained natively.

The run loop lives in native code (``dbt_enter`` in the support module); this class is what
runs when native code returns to Python, which it does only to

* translate a missed block (``miss``) or link a direct exit to its target (``chain``),
* hand an instruction to the interpreter: ``interp-one`` (round-to-nearest-max-magnitude,
  invalid rounding modes) and ``host-fault`` (translated code faulted in the host: the
  interpreter re-executes the instruction and either reports the precise guest fault or,
  for a store into translated code, performs it after the code there is invalidated),
* stop for the machine: a syscall, a fault, an illegal instruction, the budget.

Every such exit is counted by reason in ``stats.exits``.

Threads. Everything here runs on the vCPU thread (the one calling ``run``), or while that
thread is parked (the monitor's run_on_cpu), except three entry points:

* ``_compiled`` runs in a region worker's reader thread: it only appends the reply to
  ``_ready`` under ``_lock`` and wakes the vCPU (``_wake``);
* ``request_exit`` and ``_wake`` run in any thread: they set ``_stop_req``, ``_exit_req``
  and ``state.icount_limit`` together under ``_lock``.

So ``_ready``, ``_exit_req``, ``_stop_req`` and the limit the translated code reads are
shared and locked; the translation cache, the jump cache and chain slots, the job tables
(``_jobs``, ``_job_table``), the profiler and the statistics are confined to the vCPU thread
(a reply is matched with its job only there, in ``_service``). The worker pool locks its own
worker list and counters (``dbtlab.ir.region_worker``).
"""

from __future__ import annotations

import bisect
import gc
import threading
import ctypes
import itertools
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from dbtlab.ir import hostfault
from dbtlab.ir.env import (MAX_RUN_BUDGET, MAX_SLOTS, NUM_HELPERS, ULOG_SIZE, WLOG_SIZE,
                           JITEnv)
from dbtlab.ir.jit import JITEngine
from dbtlab.ir.llvm_emit import ModuleEmitter
from dbtlab.ir.stencil_patch import BufferFull, HoleOverflow
from dbtlab.ir.state import (EXIT_BUDGET, EXIT_CHAIN, EXIT_EBREAK, EXIT_ECALL, EXIT_FAULT,
                             EXIT_FENCE_I, EXIT_HOSTFAULT, EXIT_ILLEGAL, EXIT_INTERP_ONE,
                             EXIT_HOT, EXIT_LOOKUP, EXIT_MISS, EXIT_NAMES)
from dbtlab.runtime.accel.base import AccelStats, Accelerator, Exit
from dbtlab.runtime.accel.interp import InterpAccel
from dbtlab.runtime.linux.memory import ADDR_LIMIT, PAGE_SHIFT, GuestFault
from dbtlab.translator.block import form_block
from dbtlab.translator.decode import decode
from dbtlab.translator.lift import TRANSLATOR_VERSION, lift_block
from dbtlab.translator.insn import Insn
from dbtlab.translator.tcache import TB, SlotRec, TranslationCache

log = logging.getLogger(__name__)

MASK64 = (1 << 64) - 1
_ENTER = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p)
#: the code cache is flushed (QEMU's tb_flush) past this many compiled guest instructions
CODE_CACHE_INSNS = 2_000_000


@dataclass
class TranslationStats(AccelStats):
    blocks: int = 0                 # blocks translated (cumulative, across flushes)
    stencil_blocks: int = 0         # ... of which by copying and patching stencils
    stencil_seconds: float = 0.0    # decode + copy and patch, for those
    stencil_us: list = field(default_factory=list)   # per stencil block (µs)
    stencil_refused: Counter = field(default_factory=Counter)  # why the LLVM tier got one
    guest_insns: int = 0
    modules: int = 0
    emit_seconds: float = 0.0       # decode + semantics + IR text
    compile_seconds: float = 0.0    # LLVM: parse, verify, codegen, link
    per_module: list = field(default_factory=list)   # (blocks, insns, emit s, compile s)
    truncated: int = 0              # budget-limited block variants
    invalidated: int = 0
    smc: int = 0                    # stores into translated code
    host_faults: int = 0
    regions: int = 0                # second-tier regions installed
    region_blocks: int = 0
    region_insns: int = 0
    region_seconds: float = 0.0     # compiling regions (in workers when there are workers)
    regions_dropped: int = 0        # compiled too late (code changed or flushed meanwhile)
    region_cache_hits: int = 0      # regions loaded from the persistent cache
    region_rollbacks: int = 0       # host faults in regions, replayed in the first tier
    cache_hits: int = 0             # modules loaded from the persistent cache
    jc_refills: int = 0             # misses of the jump cache for translated blocks
    links: int = 0
    flushes: int = 0

    def us_per_block(self) -> list[float]:
        """Translation time per block of each module (µs), for medians."""
        return [1e6 * (e + c) / b for b, _, e, c in self.per_module if b]

    def as_dict(self) -> dict:
        d = super().as_dict()
        d.update(blocks=self.blocks, guest_insns=self.guest_insns, modules=self.modules,
                 emit_seconds=self.emit_seconds, compile_seconds=self.compile_seconds,
                 truncated=self.truncated, invalidated=self.invalidated, links=self.links,
                 flushes=self.flushes, smc=self.smc, host_faults=self.host_faults,
                 regions=self.regions, region_blocks=self.region_blocks,
                 region_insns=self.region_insns, region_seconds=self.region_seconds,
                 regions_dropped=self.regions_dropped,
                 region_cache_hits=self.region_cache_hits,
                 region_rollbacks=self.region_rollbacks,
                 stencil_blocks=self.stencil_blocks, stencil_seconds=self.stencil_seconds,
                 stencil_refused=dict(self.stencil_refused))
        sb = sorted(self.stencil_us)
        if sb:
            d["median_us_per_stencil_block"] = sb[len(sb) // 2]
        ub = sorted(self.us_per_block())
        if ub:
            d["median_us_per_llvm_block"] = ub[len(ub) // 2]
        ub = sorted(ub + self.stencil_us)       # every block, whichever tier made it
        if ub:
            d["median_us_per_block"] = ub[len(ub) // 2]
        if self.blocks:
            d["us_per_block"] = 1e6 * (self.emit_seconds + self.compile_seconds) / self.blocks
        d["cache_hits"] = self.cache_hits
        d["jc_refills"] = self.jc_refills
        return d


class LLVMAccel(Accelerator):
    name = "llvm"

    def __init__(self, machine) -> None:
        super().__init__(machine)
        self.stats = TranslationStats()
        cfg = machine.config
        self.cfg = cfg
        self.mem = machine.mem
        self.debug = cfg.debug
        self.debug_out = open(cfg.debug_file, "a") if cfg.debug_file else sys.stderr
        hostfault.install()
        self.env = JITEnv()
        import os
        self.jit = JITEngine(cfg.opt_level, cfg.codegen_opt, cfg.debug, self.debug_out,
                             cache_dir=cfg.cache_dir or os.environ.get("DBTLAB_CACHE_DIR"),
                             use_cache=cfg.cache, code_version=TRANSLATOR_VERSION)
        self._engine_ready()
        self.cache = TranslationCache(self.env.set_slot, self.jit.helpers[EXIT_CHAIN],
                                      MAX_SLOTS)
        self._linking = "translate"         # why links are being made (profile events)
        self._mod_ids = itertools.count(1)
        self._region_ids = itertools.count(1)   # regions' own: block modules' names (part
                                                # of their cache keys) never depend on them
        self._insns_since_flush = 0
        self._fn_starts: list[int] = []       # sorted host addresses of block functions
        self._fn_blocks: dict[int, TB] = {}
        self.interp = InterpAccel(machine, decode_cache=False)
        # second-tier compilation off the executing thread
        self._pool = None                     # worker processes (created on first need)
        # confined to the vCPU thread:
        self._jobs: dict[int, int] = {}       # entry pc -> pending job id
        self._job_table: dict[int, tuple] = {}   # job id -> job
        self._job_ids = itertools.count(1)
        # shared with the workers' reader threads and with request_exit's callers, under
        # _lock:
        self._ready: list = []                # (job id, object or None) not yet served
        self._lock = threading.Lock()
        self._exit_req = False                # translated code asked to come back
        self._stop_req = False                # ... and run() to return (request_exit)
        self._limit = 0                       # the real instruction limit of this run
        self.write_log = None                 # ctypes buffer while the write log is on
        self.threshold = cfg.regions
        self.hot_counts = None
        self._next_block_id = 1
        if self.threshold:
            from dbtlab.ir.env import PROF_MAX_BLOCKS
            self.hot_counts = (ctypes.c_uint64 * PROF_MAX_BLOCKS)()
            self.ulog = (ctypes.c_uint64 * (2 * ULOG_SIZE))()
        self.profiler = None
        if cfg.profile:
            from dbtlab.runtime.profile import ProfileRecorder
            self.profiler = ProfileRecorder(machine)
            self.cache.listener = self.profiler.on_chain_event
        self.stencils = None                  # the stencil tier (translator/stencils.py)
        if "stencil" in cfg.tiers:
            from dbtlab.translator.stencils import StencilTranslator, load_library
            self.stencils = StencilTranslator(load_library(
                cfg.cache_dir or os.environ.get("DBTLAB_CACHE_DIR")))
        self.mem.map_listeners.append(self._on_map)
        self.mem.code_write_listeners.append(self._on_code_write)

    def _engine_ready(self) -> None:
        self._enter = _ENTER(self.jit.enter_address)
        for idx in range(NUM_HELPERS):
            self.env.set_helper(idx, self.jit.helpers.get(idx, 0))

    # ---- memory events ---------------------------------------------------------------
    def _on_map(self, event: str, addr: int, size: int, prot: int, host: int) -> None:
        if event == "unmap" or event == "protect":
            pages = range(addr >> PAGE_SHIFT, (addr + size) >> PAGE_SHIFT)
            by_page = self.cache.by_page      # walk the smaller side: ranges can be huge
            hit = sorted(pn for pn in by_page if pn in pages) if len(pages) > len(by_page) \
                else [pn for pn in pages if pn in by_page]
            if hit:
                self._invalidate(hit)

    def _on_code_write(self, pn: int) -> None:
        self._invalidate([pn])

    def _invalidate(self, pages) -> None:
        pages = list(pages)
        freed_before = set(self.cache.slots)
        gone = self.cache.invalidate_pages(pages)
        if self.profiler is not None:
            self.profiler.on_slots_freed(freed_before - set(self.cache.slots))
            self.profiler.on_invalidate(gone)
        for tb in gone:
            if tb.key[1] is None:
                self.env.jc_drop(tb.pc)
        for tb in gone:
            if tb.key[1] == "region":
                t1 = self.cache.get(tb.pc)
                if t1 is not None:
                    self.env.jc_set(tb.pc, t1.fn)
        for pn in pages:
            if pn not in self.cache.by_page:
                self.mem.unmark_code(pn)
        self.stats.invalidated += len(gone)

    def invalidate_all(self) -> None:
        self._flush()

    def enable_write_log(self) -> None:
        """Translate stores that log their addresses (code translated before has no
        logging, so it is dropped)."""
        super().enable_write_log()
        if self.write_log is None:
            self.write_log = (ctypes.c_uint64 * WLOG_SIZE)()
            self.env.state.wlog_n = 0
            self._flush()

    def take_written_pages(self) -> set[int]:
        pages = super().take_written_pages()
        st = self.env.state
        n = st.wlog_n
        if n > WLOG_SIZE:
            raise RuntimeError(f"write log overflow ({n} stores since the last read)")
        for i in range(n):
            a = self.write_log[i]
            pages.add(a >> PAGE_SHIFT)
            pages.add(((a + 7) & ((1 << 64) - 1)) >> PAGE_SHIFT)
        st.wlog_n = 0
        self.machine.cpu.wlog_n = 0
        return pages

    def _flush(self) -> None:
        """Drop every translation and the code itself (QEMU's tb_flush)."""
        for pn in list(self.cache.by_page):
            self.mem.unmark_code(pn)
        if self.profiler is not None:
            self.profiler.on_flush(list(self.cache.slots))
        self.env.flush_jump_cache()
        self.jit.flush()
        self._engine_ready()
        self.cache.clear(self.jit.helpers[EXIT_CHAIN])
        self._fn_starts.clear()
        self._fn_blocks.clear()
        if self.stencils is not None:
            self.stencils.patcher.buf.reset()
        self._insns_since_flush = 0
        self.stats.flushes += 1

    # ---- translation -----------------------------------------------------------------
    def _fetch(self, pc: int) -> Insn:
        lo = int.from_bytes(self.mem.fetch(pc, 2), "little")
        word = lo if lo & 3 != 3 else int.from_bytes(self.mem.fetch(pc, 4), "little")
        return decode(word)

    def _block_fetcher(self, pc: int):
        """A fetch for one block formation: the block's page is checked and read once
        (blocks never leave their page); an instruction running past the page's end, or a
        page that may not be fetched, goes through ``_fetch`` (which faults precisely)."""
        base = pc & ~0xFFF
        try:
            page = self.mem.fetch(base, 0x1000)
        except GuestFault:
            return self._fetch

        def fetch(a: int) -> Insn:
            off = a - base
            if 0 <= off <= 0xFFC:
                lo = page[off] | page[off + 1] << 8
                if lo & 3 != 3:
                    return decode(lo)
                return decode(lo | page[off + 2] << 16 | page[off + 3] << 24)
            return self._fetch(a)
        return fetch

    def translate(self, pc: int, limit: int | None = None) -> TB:
        """Translate the block at pc — and, for a full block, its statically reachable
        successors up to the batch size — into one module. Raises GuestFault if pc
        cannot be fetched. (Python's cyclic GC is paused meanwhile: translation makes
        many short-lived objects and no cycles.)"""
        gc_was = gc.isenabled()
        gc.disable()
        try:
            return self._translate(pc, limit)
        finally:
            if gc_was:
                gc.enable()

    def translate_many(self, pcs: list[int], max_blocks: int = 256) -> int:
        """Translate the blocks at ``pcs`` and their statically reachable successors into
        modules of up to ``max_blocks`` blocks, so that a caller who knows many entry
        points at once (the fuzzer places hundreds of small programs in memory) pays
        LLVM's per-module cost once per batch. Unfetchable pcs are skipped. Returns the
        number of blocks translated."""
        gc_was = gc.isenabled()
        gc.disable()
        before = self.stats.blocks
        blocks = self.cache.blocks
        try:
            if self.stencils is not None:       # no module cost to amortise: each on its own
                for p in dict.fromkeys(pcs):
                    if (p, None) not in blocks:
                        try:
                            self._translate(p, None)
                        except GuestFault:
                            pass
                return self.stats.blocks - before
            todo = [p for p in dict.fromkeys(pcs) if (p, None) not in blocks]
            while todo:
                try:
                    tb = self._translate(todo[0], None, todo[1:], max_blocks)
                    new = [t for t in blocks.values() if t.module == tb.module]
                    todo += [s for t in new for s in t.successors]
                except GuestFault:
                    pass
                todo = [p for p in dict.fromkeys(todo[1:]) if (p, None) not in blocks]
        finally:
            if gc_was:
                gc.enable()
        return self.stats.blocks - before

    def _translate(self, pc: int, limit: int | None, more: list[int] = (),
                   max_blocks: int | None = None) -> TB:
        if (self._insns_since_flush > CODE_CACHE_INSNS
                or self.cache.free_slots() < 4 * (max_blocks or self.cfg.batch_blocks) + 16):
            self._flush()
        if (self.stencils is not None and not more and self.cfg.chain
                and self.profiler is None and self.write_log is None):
            tb = self._translate_stencil(pc, limit)
            if tb is not None:
                return tb
            max_blocks = 1      # only the block stencils cannot serve: not its successors
        t0 = time.perf_counter()
        mod = ModuleEmitter(f"m{self.jit.generation}_{next(self._mod_ids)}", self.cfg.chain,
                            self.cache.new_slot_id, profile=self.profiler is not None,
                            block_ids=self._block_ids(),
                            write_log=self.write_log is not None,
                            hot=self.hot_counts is not None and not limit)
        batch = 1 if limit else max_blocks or max(1, self.cfg.batch_blocks)
        max_len = limit or self.cfg.max_block_insns
        queue = [pc, *more]
        seen = set()
        while queue and len(mod.blocks) < batch:
            p = queue.pop(0)
            if p in seen or (p != pc and (p, None) in self.cache.blocks):
                continue
            seen.add(p)
            try:
                blk = form_block(self._fetch, p, max_len)
            except GuestFault:
                if p == pc:
                    raise
                continue
            blk.limit = limit
            code = lift_block(mod, blk)
            queue.extend(code.successors)
        text = mod.text()
        t1 = time.perf_counter()
        addrs = self.jit.compile(text, f"tbl_{mod.name}", len(mod.table))
        t2 = time.perf_counter()
        ninsns = 0
        new_slots = []
        new_tbs = []
        for code in mod.blocks:
            blk = code.block
            tb = TB((blk.pc, limit), blk, addrs[code.table_index], mod.name,
                    compile_seconds=(t2 - t0) / len(mod.blocks),
                    successors=list(code.successors), id=code.id)
            self.cache.insert(tb)
            new_tbs.append(tb)
            bisect.insort(self._fn_starts, tb.fn)
            self._fn_blocks[tb.fn] = tb
            for pn in blk.pages:
                self.mem.mark_code(pn)
            for sl in code.slots:
                rec = SlotRec(sl.id, tb.key, sl.target)
                self.cache.add_slot(rec)
                new_slots.append(rec)
            if limit is None:
                self.env.jc_set(blk.pc, tb.fn)
            ninsns += len(blk.insns)
            if "in_asm" in self.debug:
                self._dump_in_asm(tb)
        if "perfmap" in self.debug:
            self._perf_map(mod.blocks, addrs)
        if self.profiler is not None:
            self.profiler.on_module(mod.name, mod.blocks, new_tbs, t1 - t0, t2 - t1, addrs)
        if self.cfg.chain:      # link what can be linked now, saving an exit per edge
            for rec in new_slots:
                tgt = self.cache.best(rec.target_pc)
                if tgt is not None:
                    self.cache.link(rec.id, tgt)
        st = self.stats
        st.cache_hits = self.jit.stats.cache_hits
        st.blocks += len(mod.blocks)
        st.guest_insns += ninsns
        st.modules += 1
        st.emit_seconds += t1 - t0
        st.compile_seconds += t2 - t1
        st.per_module.append((len(mod.blocks), ninsns, t1 - t0, t2 - t1))
        self._insns_since_flush += ninsns
        if limit:
            st.truncated += 1
        return self.cache.blocks[(pc, limit)]

    def _perf_map(self, blocks, addrs) -> None:
        """Append the module's block functions to /tmp/perf-PID.map (perf's JIT symbol
        convention). A function's size is the distance to the next one in the module."""
        import os
        starts = sorted(addrs[c.table_index] for c in blocks)
        with open(f"/tmp/perf-{os.getpid()}.map", "a") as f:
            for c in blocks:
                a = addrs[c.table_index]
                nxt = next((s for s in starts if s > a), a + 1024)
                sym = self.machine.where_symbol(c.block.pc).split(" ", 1)[-1].strip("<>")
                f.write(f"{a:x} {nxt - a:x} guest_{c.block.pc:x}_{sym}\n")

    def _translate_stencil(self, pc: int, limit: int | None = None) -> TB | None:
        """The block at pc by copying and patching stencils, or None when some instruction
        has no stencil (the LLVM tier translates that block). ``limit``: a budget-limited
        variant of at most that many instructions (its exits chain like any block's: the
        next block's entry checks the budget)."""
        t0 = time.perf_counter()
        max_len = limit or self.cfg.max_block_insns
        blk = form_block(self._block_fetcher(pc), pc, max_len)
        blk.limit = limit
        ids = None if limit else self._block_ids()
        bid = ids() if ids else None
        taken: list[int] = []

        def new_slot(target: int) -> int:
            taken.append(self.cache.new_slot_id())
            return taken[-1]
        try:
            try:
                got = self.stencils.translate(blk, new_slot, bid)
            except BufferFull:
                self._flush()                   # resets the code buffer and the slots
                taken.clear()
                blk = form_block(self._block_fetcher(pc), pc, max_len)
                blk.limit = limit
                got = self.stencils.translate(blk, new_slot, bid)
        except HoleOverflow as e:
            log.debug("block %#x: %s; the LLVM tier translates it", pc, e)
            for sid in taken:                   # allocated for exits of code never made
                self.cache.release_slot_id(sid)
            self.stencils.refused = "a value too large for its hole"
            got = None
        if got is None:
            self.stats.stencil_refused[self.stencils.refused] += 1
            return None
        addr, exits, layout = got
        tb = TB((blk.pc, limit), blk, addr, "stencil", successors=[t for _, t in exits],
                tier=0, id=bid or 0)
        tb.host_starts = [off for off, _ in layout[1:]]   # instruction k's code offset
        self.cache.insert(tb)
        bisect.insort(self._fn_starts, tb.fn)
        self._fn_blocks[tb.fn] = tb
        for pn in blk.pages:
            self.mem.mark_code(pn)
        for sid, target in exits:
            self.cache.add_slot(SlotRec(sid, tb.key, target))
        if limit is None:
            self.env.jc_set(blk.pc, tb.fn)
        else:
            self.stats.truncated += 1
        if "in_asm" in self.debug:
            self._dump_in_asm(tb)
        dt = time.perf_counter() - t0
        st = self.stats
        st.blocks += 1
        st.stencil_blocks += 1
        st.stencil_seconds += dt
        st.stencil_us.append(1e6 * dt)
        st.guest_insns += len(blk.insns)
        self._insns_since_flush += len(blk.insns)
        if self.cfg.chain:      # link what can be linked now, saving an exit per edge
            for sid, target in exits:
                t = self.cache.best(target)
                if t is not None:
                    self.cache.link(sid, t)
                    st.links += 1
        return tb

    def _block_ids(self):
        if self.profiler is not None:
            if self.hot_counts is None:
                return self.profiler.new_block_id

            def new_id() -> int:
                bid = self.profiler.new_block_id()
                self.hot_counts[bid] = self.threshold
                return bid
            return new_id
        if self.hot_counts is None:
            return None

        def new_id() -> int:
            bid = self._next_block_id
            if bid >= len(self.hot_counts):
                return 0          # counter 0 never fires (it wraps to 2**64 - 1)
            self._next_block_id += 1
            self.hot_counts[bid] = self.threshold
            return bid
        return new_id

    def _dump_in_asm(self, tb: TB) -> None:
        from dbtlab.translator.disasm import disasm
        out = [f"IN: {self.machine.where_symbol(tb.pc)}"]
        for pc, insn in tb.block.insns:
            out.append(f"0x{pc:016x}:  {insn.hex():<8}  {disasm(insn, pc)}")
        self.debug_out.write("\n".join(out) + "\n\n")

    # ---- second tier: hot regions ----------------------------------------------------
    def form_region(self, entry: TB) -> list[TB]:
        """The first-tier blocks of the region entered at ``entry``: the loop it heads or
        lies in (the strongly connected part of the static control flow among translated
        blocks that can reach back to it), bounded; empty when it is in no loop."""
        from dbtlab.translator.lift import MAX_REGION_BLOCKS, MAX_REGION_INSNS
        def succ(tb: TB) -> list[TB]:
            out = []
            for t in tb.successors:
                s = self.cache.get(t)
                if s is not None and s not in out:
                    out.append(s)
            return out
        order, seen = [entry], {entry.pc}
        i = 0
        while i < len(order) and len(order) < 4 * MAX_REGION_BLOCKS:
            for s in succ(order[i]):
                if s.pc not in seen:
                    seen.add(s.pc)
                    order.append(s)
            i += 1
        back = {entry.pc}
        changed = True
        while changed:                       # blocks of `order` that can reach the entry
            changed = False
            for tb in order:
                if tb.pc not in back and any(s.pc in back for s in succ(tb)):
                    back.add(tb.pc)
                    changed = True
        if len(back) > 1 or entry.pc in entry.successors:
            picked = [tb for tb in order if tb.pc in back]
        else:
            # no loop through it: a region would only add entry and exit costs (measured
            # on call-heavy code such as qsort's comparisons), so it stays first-tier
            return []
        out, n = [], 0
        for tb in picked:
            if len(out) >= MAX_REGION_BLOCKS or n + len(tb.block.insns) > MAX_REGION_INSNS:
                break
            out.append(tb)
            n += len(tb.block.insns)
        return out

    def _covered(self, pc: int) -> bool:
        """Is ``pc`` a block of an installed or pending region? (An inner loop's head then
        gets no region of its own: the one containing it already runs it, and a copy per
        loop head of one loop nest would only keep the workers busy.)"""
        for tbs in (job[1] for job in self._job_table.values()):
            if any(tb.pc == pc for tb in tbs):
                return True
        return any(b.pc == pc for rtb in self.cache.regions() for b in rtb.blocks)

    def _on_hot(self, pc: int) -> None:
        entry = self.cache.get(pc)
        if entry is None or self.cache.get(pc, "region") is not None or pc in self._jobs \
                or self._covered(pc):
            return
        tbs = self.form_region(entry)
        if tbs:
            self.compile_region(entry, tbs)

    def compile_region(self, entry: TB, tbs: list[TB]) -> None:
        """Emit the region's IR here (fast), compile it in a worker process (slow) — or
        in-process without workers — and install it when it is ready."""
        from dbtlab.ir.jit import compile_object
        from dbtlab.translator.lift import lift_region
        if self.cache.free_region_slots() < 16 * len(tbs) + 16:
            log.info("no region formed at %#x: out of region chain slots", entry.pc)
            return
        mod = ModuleEmitter(f"R{self.jit.generation}_{next(self._region_ids)}",
                            self.cfg.chain, self.cache.new_region_slot_id,
                            write_log=self.write_log is not None,
                            profile=self.profiler is not None)
        code = lift_region(mod, entry.pc, [tb.block for tb in tbs], [tb.id for tb in tbs])
        text = mod.text()
        if "op" in self.debug:
            self.debug_out.write(f"OP (region {entry.pc:#x}):\n{text}\n")
        job = (entry, tbs, mod, code, self.jit.generation, time.perf_counter())
        key = None
        pcache = self.jit.cache
        if pcache is not None and not self.debug & {"op_opt", "out_asm"}:
            key = pcache.key(self.jit.cache_prefix, f"region-O{self.cfg.region_opt}", text)
            obj = pcache.get(key)
            if obj is not None:               # compiled by an earlier run: no worker
                self.stats.region_cache_hits += 1
                self._finish_job(job, obj)
                return
        job += (key,)
        if self.cfg.region_workers <= 0:
            obj = compile_object(text, self.cfg.region_opt, self.cfg.region_opt)
            self._finish_job(job, obj)
            return
        jid = next(self._job_ids)
        self._jobs[entry.pc] = jid
        self._job_table[jid] = job
        self._workers().submit(jid, text, self.cfg.region_opt, self.cfg.region_opt)

    def _compiled(self, jid, obj, err) -> None:
        """A worker finished (runs in the worker's reader thread). The reply waits in
        ``_ready`` until the vCPU thread serves it: this thread touches nothing else (the
        job tables are the vCPU thread's), and the guest goes on running afterwards."""
        if err:
            log.warning("region compile failed: %s", err)
        with self._lock:
            self._ready.append((jid, obj))
        self._wake()

    def _workers(self):
        if self._pool is None:
            from dbtlab.ir.region_worker import WorkerPool
            self._pool = WorkerPool(self.cfg.region_workers, self._compiled)
        return self._pool

    def _finish_job(self, job, obj: bytes | None) -> None:
        entry, tbs, mod, code, generation, t0 = job[:6]
        self._jobs.pop(entry.pc, None)
        self.stats.region_seconds += time.perf_counter() - t0
        if obj is None:
            self.stats.regions_dropped += 1
            return
        if len(job) > 6 and job[6] is not None:
            self.jit.cache.put(job[6], obj)
        self.install_region(entry, tbs, mod, code, obj, generation)

    def _service(self) -> bool:
        """Serve an exit request (vCPU thread, the guest not running): restore the limit,
        install the regions the workers finished; True if run() must return."""
        with self._lock:
            ready, self._ready = self._ready, []
            stop, self._stop_req = self._stop_req, False
            self._exit_req = False
            self.env.state.icount_limit = self._limit
        for jid, obj in ready:
            job = self._job_table.pop(jid, None)
            if job is not None:
                self._finish_job(job, obj)
        return stop

    def _wake(self) -> None:
        """Bring translated code back to Python at its next block entry (any thread):
        the instruction limit it checks becomes 0 until the request is served."""
        with self._lock:
            self._exit_req = True
            self.env.state.icount_limit = 0

    def request_exit(self) -> None:
        """Make run() return EXIT_BUDGET at the next block entry (any thread)."""
        with self._lock:
            self._stop_req = True
            self._exit_req = True
            self.env.state.icount_limit = 0

    def _set_limit(self) -> None:
        with self._lock:
            self.env.state.icount_limit = 0 if self._exit_req else self._limit

    def install_region(self, entry: TB, tbs: list[TB], mod, code, obj: bytes,
                       generation: int) -> bool:
        """Link a compiled region in: it becomes what the jump cache and every chain into
        its entry run. Dropped if its code changed or the engine was flushed meanwhile."""
        from dbtlab.translator.tcache import RegionTB
        if generation != self.jit.generation or not all(tb.valid for tb in tbs) or \
                self.cache.get(entry.pc, "region") is not None:
            self.stats.regions_dropped += 1
            return False
        addrs = self.jit.add_object(obj, f"tbl_{mod.name}", len(mod.table))
        rtb = RegionTB((entry.pc, "region"), entry.block, addrs[code.table_index], mod.name,
                       successors=list(code.successors), blocks=list(code.blocks))
        self.cache.insert(rtb)
        bisect.insort(self._fn_starts, rtb.fn)
        self._fn_blocks[rtb.fn] = rtb
        for sl in code.slots:
            rec = SlotRec(sl.id, rtb.key, sl.target)
            self.cache.add_slot(rec)
            if self.cfg.chain:
                tgt = self.cache.best(sl.target)
                if tgt is not None:
                    self.cache.link(sl.id, tgt)
        for sid in list(entry.incoming):     # predecessors now enter the region
            self.cache.link(sid, rtb)
        self.env.jc_set(entry.pc, rtb.fn)
        if self.profiler is not None:
            self.profiler.on_region(rtb, tbs, code)
        st = self.stats
        st.regions += 1
        st.region_blocks += len(code.blocks)
        st.region_insns += code.guest_insns
        if "in_asm" in self.debug:
            self.debug_out.write(f"REGION {self.machine.where_symbol(entry.pc)}: "
                                 f"{len(code.blocks)} blocks, {code.guest_insns} insns\n\n")
        return True

    # ---- running ---------------------------------------------------------------------
    def _load_env(self, budget: int, instret: int) -> None:
        """Counting starts from 0 each run, against a budget below 2**63 (a longer one
        ends the run early, with EXIT_BUDGET): no comparison in translated code wraps
        whatever the guest's instret is; counter CSRs add the base (ir/env.py)."""
        self._limit = max(0, min(budget, MAX_RUN_BUDGET))
        self.env.set_icount_base(instret)
        self._import_cpu(0)

    def _import_cpu(self, icount: int) -> None:
        """The machine's CPU state into the environment, plus what translated code reads
        besides it (addresses of the guest view and of the tables, the limit)."""
        st = self.env.state
        st.copy_from(self.machine.cpu)
        st.guest_base = self.mem.guest_base
        st.addr_limit = ADDR_LIMIT
        st.icount = icount
        self._set_limit()
        if self.profiler is not None:
            self.profiler.install(st)
        if self.write_log is not None:
            st.wlog = ctypes.addressof(self.write_log)
        if self.hot_counts is not None:
            st.hot_counts = ctypes.addressof(self.hot_counts)
            st.ulog = ctypes.addressof(self.ulog)

    def _store_env(self) -> None:
        self.machine.cpu.copy_from(self.env.state)

    def run(self, budget: int) -> Exit:
        self.stats.runs += 1
        with hostfault.ACTIVE_LOCK:
            try:
                hostfault.set_active(self.env.address)
                return self._run(budget)
            finally:
                hostfault.set_active(None)

    def _run(self, budget: int) -> Exit:
        st = self.env.state
        self._load_env(budget, self.machine.instret)
        exits = self.stats.exits
        env_addr = self.env.address
        first = None
        while True:
            r = self._enter(env_addr, first)
            first = None
            exits[EXIT_NAMES.get(r, str(r))] += 1
            if "exits" in self.debug:
                self.debug_out.write(f"EXIT {EXIT_NAMES.get(r, r)} pc={st.pc:#x}\n")
            if r == EXIT_MISS:
                tb = self.cache.best(st.pc)
                if tb is not None:      # only evicted from the direct-mapped jump cache
                    self.env.jc_set(st.pc, tb.fn)
                    first = tb.fn
                    self.stats.jc_refills += 1
                    continue
                try:
                    self.translate(st.pc)
                except GuestFault as f:
                    return self._exit(Exit(EXIT_FAULT, 0, f.kind, f.addr))
            elif r == EXIT_CHAIN:
                st.pc = self.cache.slots[st.exit_aux].target_pc
                first = self._chain(st.exit_aux, st.pc)
                if isinstance(first, Exit):
                    return self._exit(first)
            elif r == EXIT_BUDGET:
                if self._exit_req:       # unlocked read: set before the limit drops to
                    if self._service():  # 0 and cleared only by _service, on this thread
                        return self._exit(Exit(EXIT_BUDGET, 0))
                    continue
                left = self._limit - st.icount
                if left <= 0:
                    return self._exit(Exit(EXIT_BUDGET, 0))
                tb = self.cache.get(st.pc, left)
                if tb is None:
                    try:
                        tb = self.translate(st.pc, left)
                    except GuestFault as f:
                        return self._exit(Exit(EXIT_FAULT, 0, f.kind, f.addr))
                first = tb.fn
            elif r in (EXIT_INTERP_ONE, EXIT_HOSTFAULT):
                if r == EXIT_HOSTFAULT:
                    first = self._rewind_host_fault()
                    if first:              # a region rolled back: replay in the first tier
                        continue
                ex = self._interp_one()
                if ex is not None:
                    return self._exit(ex)
            elif r == EXIT_HOT:
                self._on_hot(st.pc)
            elif r in (EXIT_FENCE_I, EXIT_LOOKUP):
                continue
            elif r in (EXIT_ECALL, EXIT_EBREAK, EXIT_ILLEGAL, EXIT_FAULT):
                return self._exit(Exit(r, 0, st.fault_kind, st.fault_addr, st.exit_aux))
            else:
                raise RuntimeError(f"translated code returned unknown exit {r}")

    def _exit(self, ex: Exit) -> Exit:
        ex.executed = self.env.state.icount       # counted from 0 in this run
        if ex.reason != EXIT_ILLEGAL:
            ex.word = 0
        self._store_env()
        return ex

    def _rewind_host_fault(self):
        """A first-tier block faulted at the instruction whose pc it stored: count only
        the instructions before it (the block had counted all of its own on entry); the
        interpreter then runs that instruction. A region faulted: undo its stores since
        the last checkpoint and return the first-tier function to replay from there."""
        st = self.env.state
        self.stats.host_faults += 1
        i = bisect.bisect_right(self._fn_starts, st.host_pc) - 1
        tb = self._fn_blocks.get(self._fn_starts[i]) if i >= 0 else None
        if tb is not None and tb.tier == 2:
            return self._rollback_region(tb)
        if tb is not None and tb.tier == 0:      # a stencil block: its layout names the pc
            k = bisect.bisect_right(tb.host_starts, st.host_pc - tb.fn) - 1
            if 0 <= k < len(tb.block.insns):
                st.pc = tb.block.insns[k][0]
        blk = tb.block_of(st.pc) if tb is not None else None
        if blk is None:
            raise RuntimeError(f"host fault at {st.host_pc:#x} (guest pc {st.pc:#x}) "
                               "outside translated code")
        insns = blk.insns
        k = next(k for k, (pc, _) in enumerate(insns) if pc == st.pc)
        st.icount -= len(insns) - k

    def _rollback_region(self, rtb) -> int:
        n = st_n = self.env.state.ulog_n
        if n > ULOG_SIZE:
            raise RuntimeError(f"region undo log overflow ({st_n} entries)")
        log_ = self.ulog
        for k in range(n - 1, -1, -1):
            tagged, old = log_[2 * k], log_[2 * k + 1]
            size = tagged >> 56
            self.mem.restore_raw(tagged & ((1 << 56) - 1), old.to_bytes(8, "little")[:size])
        self.env.state.ulog_n = 0
        self.stats.region_rollbacks += 1
        t1 = self.cache.get(self.env.state.pc)
        if t1 is None:
            t1 = self.translate(self.env.state.pc)
        return t1.fn

    def _chain(self, slot_id: int, target_pc: int):
        """An unlinked direct exit was taken: translate the target if needed and link."""
        tb = self.cache.best(target_pc)
        if tb is None:
            try:
                tb = self.translate(target_pc)
            except GuestFault as f:
                return Exit(EXIT_FAULT, 0, f.kind, f.addr)
        if slot_id in self.cache.slots:
            self.cache.link(slot_id, tb)
            self.stats.links += 1
        return tb.fn

    def _interp_one(self) -> Exit | None:
        """Run the instruction at state.pc in the interpreter. Its stores go through the
        machine's memory, so a store into translated code invalidates it first."""
        st = self.env.state
        if st.icount >= self._limit:
            return None
        self._store_env()
        n_smc = self.stats.invalidated
        ex = self.interp.run(1, instret=(self.env.icount_base() + st.icount) & MASK64)
        self._import_cpu(st.icount + ex.executed)
        if self.stats.invalidated != n_smc:
            self.stats.smc += 1
        if ex.reason == EXIT_BUDGET:
            return None
        return ex

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        for lst, fn in ((self.mem.map_listeners, self._on_map),
                        (self.mem.code_write_listeners, self._on_code_write)):
            if fn in lst:
                lst.remove(fn)
        self.interp.close()
        self.jit.close()
        if self.debug_out is not sys.stderr:
            self.debug_out.close()
