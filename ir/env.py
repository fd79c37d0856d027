"""The native environment translated code runs against: the CPU state followed by the
software TLBs and the jump cache, all reached from one pointer (``%st``) at fixed offsets
so translated code contains no process addresses.

Layout (bytes):

====================  ============================================================
0 .. STATE_SIZE       ``CPUState`` (ir/state.py)
TLB_R_OFF             read TLB: TLB_ENTRIES x {tag, addend}
TLB_W_OFF             write TLB: TLB_ENTRIES x {tag, addend}
JC_OFF                jump cache: JC_ENTRIES x {guest pc, host function}
====================  ============================================================

A TLB entry maps guest page ``tag`` to host memory at ``guest address + addend``. The tag
compare includes the access's low alignment bits, so misaligned accesses (and any address
never mapped) take the slow path. Pages holding translated code never get a write entry:
stores to them go through the slow path, which reports self-modifying code.
"""

from __future__ import annotations

import ctypes

from dbtlab.ir.state import NUM_SLOTS, CPUState

STATE_SIZE = 8 * NUM_SLOTS
TLB_BITS = 10
TLB_ENTRIES = 1 << TLB_BITS
TLB_R_OFF = (STATE_SIZE + 63) & ~63
TLB_W_OFF = TLB_R_OFF + 16 * TLB_ENTRIES
JC_BITS = 12
JC_ENTRIES = 1 << JC_BITS
JC_OFF = TLB_W_OFF + 16 * TLB_ENTRIES
ENV_SIZE = JC_OFF + 16 * JC_ENTRIES

TLB_INVALID = (1 << 64) - 1      # never equal to a masked address
JC_EMPTY = 1                     # odd: never a guest pc


class JITEnv:
    """Owns the environment memory and offers the Python-side operations on it."""

    def __init__(self) -> None:
        self._buf = (ctypes.c_uint64 * (ENV_SIZE // 8 + 8))()
        base = ctypes.addressof(self._buf)
        self.address = (base + 63) & ~63
        self.state = CPUState.from_address(self.address)
        self._words = (ctypes.c_uint64 * (ENV_SIZE // 8)).from_address(self.address)
        self.flush_tlb()
        self.flush_jump_cache()

    # ---- TLB -------------------------------------------------------------------------
    def flush_tlb(self) -> None:
        w = self._words
        for base in (TLB_R_OFF // 8, TLB_W_OFF // 8):
            ctypes.memset(ctypes.addressof(w) + base * 8, 0xFF, 16 * TLB_ENTRIES)

    def flush_tlb_write_page(self, pn: int) -> None:
        """Drop the write entry of one page (it now holds translated code)."""
        i = TLB_W_OFF // 8 + 2 * (pn & (TLB_ENTRIES - 1))
        if self._words[i] == (pn << 12):
            self._words[i] = TLB_INVALID

    # ---- jump cache ------------------------------------------------------------------
    @staticmethod
    def jc_index(pc: int) -> int:
        return (pc >> 1) & (JC_ENTRIES - 1)

    def flush_jump_cache(self) -> None:
        w = self._words
        base = JC_OFF // 8
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
