"""The native environment translated code runs against, reached from one pointer (``%st``)
at fixed offsets, so translated code contains no process addresses:

====================  ============================================================
0 .. STATE_SIZE       ``CPUState`` (ir/state.py)
JMPBUF_OFF            the dispatcher's sigjmp_buf (host faults jump back to it)
ICBASE_OFF            the guest's instret when the current run started (see below)
HELPERS_OFF           function pointers: one exit stub per EXIT_* code, FP helpers
JC_OFF                jump cache: JC_ENTRIES x {guest pc, host function}
SLOTS_OFF             chain slots: MAX_SLOTS function pointers (direct exits)
====================  ============================================================

A direct exit of a block tail-calls through its slot; a slot that is not linked points at
the EXIT_CHAIN stub. Slot numbers are reused after invalidation.

Instruction counts. ``state.icount`` counts the instructions retired since the current run
started (from 0) and ``state.icount_limit`` is that run's budget (below 2**63), so a block's
``icount + n <= limit`` never wraps whatever the guest's instret is. The guest's 64-bit
instret (which wraps, as the architectural counter does) is the word at ``ICBASE_OFF``
plus ``icount``, modulo 2**64; only counter CSR reads need it.
"""

from __future__ import annotations

import ctypes

from dbtlab.ir.state import NUM_EXITS, NUM_SLOTS, CPUState

STATE_SIZE = 8 * NUM_SLOTS
JMPBUF_OFF = (STATE_SIZE + 63) & ~63
JMPBUF_SIZE = 256                  # glibc x86-64 sigjmp_buf is 200 bytes
ICBASE_OFF = JMPBUF_OFF + JMPBUF_SIZE
HELPERS_OFF = ICBASE_OFF + 64
#: the largest budget of one run: icount + a block's length stays below 2**64
MAX_RUN_BUDGET = 1 << 62
# helper slots after the per-exit stubs
H_GET_FFLAGS = NUM_EXITS
H_SET_FFLAGS = NUM_EXITS + 1
H_SET_FRM = NUM_EXITS + 2
H_RM_PUSH = NUM_EXITS + 3
H_RM_POP = NUM_EXITS + 4
H_PROF_EDGE = NUM_EXITS + 5
NUM_HELPERS = NUM_EXITS + 8
JC_BITS = 12
JC_ENTRIES = 1 << JC_BITS
JC_OFF = HELPERS_OFF + 8 * NUM_HELPERS
MAX_SLOTS = 1 << 17
SLOTS_OFF = JC_OFF + 16 * JC_ENTRIES
ENV_SIZE = SLOTS_OFF + 8 * MAX_SLOTS

JC_EMPTY = 1                     # odd: never a guest pc

WLOG_SIZE = 1 << 12              # store-address log entries (a step logs far fewer)
ULOG_SIZE = 1 << 14              # region undo-log entries (> stores between checkpoints)
CHECKPOINT_EVERY = 256           # back edges between a region's checkpoints at most

# profiling
PROF_MAX_BLOCKS = 1 << 20        # block ids per JIT engine generation
PROF_EDGE_BITS = 16              # dynamic edge table: 2**16 {key, count} entries
PROF_KIND_SHIFT = 24             # prof_last = block id | kind << 24 (ids < 2**20)
PROF_INDIRECT, PROF_DISPATCH, PROF_EXIT, PROF_CHAINED = 1, 2, 3, 4   # CHAINED: in a region


class JITEnv:
    """Owns the environment memory and offers the Python-side operations on it."""

    def __init__(self) -> None:
        self._buf = (ctypes.c_uint64 * (ENV_SIZE // 8 + 8))()
        base = ctypes.addressof(self._buf)
        self.address = (base + 63) & ~63
        self.state = CPUState.from_address(self.address)
        self._words = (ctypes.c_uint64 * (ENV_SIZE // 8)).from_address(self.address)
        self.flush_jump_cache()

    def set_icount_base(self, instret: int) -> None:
        """The guest's instret at the start of a run (counter CSRs add ``icount``)."""
        self._words[ICBASE_OFF // 8] = instret & ((1 << 64) - 1)

    def icount_base(self) -> int:
        return self._words[ICBASE_OFF // 8]

    def set_helper(self, index: int, fn: int) -> None:
        self._words[HELPERS_OFF // 8 + index] = fn

    def helper(self, index: int) -> int:
        return self._words[HELPERS_OFF // 8 + index]

    # ---- jump cache ------------------------------------------------------------------
    @staticmethod
    def jc_index(pc: int) -> int:
        return (pc >> 1) & (JC_ENTRIES - 1)

    def flush_jump_cache(self) -> None:
        base = JC_OFF // 8
        w = self._words
        for i in range(JC_ENTRIES):
            w[base + 2 * i] = JC_EMPTY
            w[base + 2 * i + 1] = 0

    def jc_set(self, pc: int, fn: int) -> None:
        i = JC_OFF // 8 + 2 * self.jc_index(pc)
        self._words[i + 1] = fn
        self._words[i] = pc

    def jc_drop(self, pc: int) -> None:
        i = JC_OFF // 8 + 2 * self.jc_index(pc)
        if self._words[i] == pc:
            self._words[i] = JC_EMPTY

    def jc_get(self, pc: int) -> int:
        i = JC_OFF // 8 + 2 * self.jc_index(pc)
        return self._words[i + 1] if self._words[i] == pc else 0

    # ---- chain slots -----------------------------------------------------------------
    def slot_address(self, sid: int) -> int:
        return self.address + SLOTS_OFF + 8 * sid

    def set_slot(self, sid: int, fn: int) -> None:
        self._words[SLOTS_OFF // 8 + sid] = fn
