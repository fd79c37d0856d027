"""``--accel interp``: the reference interpreter.

Decodes each instruction once (cached per guest PC, dropped when its page is written) and
runs its semantics function against an ``InterpBuilder``.
"""

from __future__ import annotations

from dbtlab.ir.interp import InterpBuilder, Trap
from dbtlab.ir.state import (EXIT_BUDGET, EXIT_EBREAK, EXIT_ECALL, EXIT_FAULT, EXIT_ILLEGAL,
                             FAULT_FETCH_MISALIGNED)
from dbtlab.runtime.accel.base import Accelerator, Exit
from dbtlab.runtime.linux.memory import PAGE_SHIFT, GuestFault
from dbtlab.translator.decode import decode
from dbtlab.translator.insn import Insn

_TRAP_EXIT = {"ecall": EXIT_ECALL, "ebreak": EXIT_EBREAK, "illegal": EXIT_ILLEGAL}


class InterpAccel(Accelerator):
    name = "interp"

    def __init__(self, machine, *, decode_cache: bool = True) -> None:
        super().__init__(machine)
        self.mem = machine.mem
        self.b = InterpBuilder(self.mem)
        self._cache: dict[int, Insn] = {}
        self._by_page: dict[int, set[int]] = {}
        self._use_cache = decode_cache
        self._exit_req = False
        if decode_cache:
            self.mem.code_write_listeners.append(self._code_written)

    # ---- decode cache ----------------------------------------------------------------
    def fetch_decode(self, pc: int) -> Insn:
        """Decode the instruction at pc (fetch faults raise GuestFault; an odd pc is the
        instruction-address-misaligned fault)."""
        insn = self._cache.get(pc)
        if insn is not None:
            return insn
        if pc & 1:
            raise GuestFault(FAULT_FETCH_MISALIGNED, pc)
        lo = int.from_bytes(self.mem.fetch(pc, 2), "little")
        word = lo if lo & 3 != 3 else int.from_bytes(self.mem.fetch(pc, 4), "little")
        insn = decode(word)
        if not self._use_cache:
            return insn
        self._cache[pc] = insn
        for pn in {pc >> PAGE_SHIFT, (pc + insn.length - 1) >> PAGE_SHIFT}:
            self._by_page.setdefault(pn, set()).add(pc)
            self.mem.mark_code(pn)
        return insn

    def _code_written(self, pn: int) -> None:
        for pc in self._by_page.pop(pn, ()):
            self._cache.pop(pc, None)
        self.mem.unmark_code(pn)

    def invalidate_all(self) -> None:
        for pn in list(self._by_page):
            self.mem.unmark_code(pn)
        self._cache.clear()
        self._by_page.clear()

    def request_exit(self) -> None:
        """Stop after the current instruction (callable from any thread). A request made
        while no run is in progress stops the next one before its first instruction: the
        flag is cleared only by the run that honours it (clearing it when a run starts
        would lose a request made just before)."""
        self._exit_req = True

    def close(self) -> None:
        if self._code_written in self.mem.code_write_listeners:
            self.mem.code_write_listeners.remove(self._code_written)

    # ---- state exchange --------------------------------------------------------------
    def _import(self, instret: int) -> None:
        cpu, b = self.machine.cpu, self.b
        b.x[:] = cpu.x
        b.x[0] = 0
        b.f[:] = cpu.f
        b.fflags, b.frm = cpu.fflags & 0x1F, cpu.frm & 7
        b.fields["res_addr"], b.fields["res_val"] = cpu.res_addr, cpu.res_val
        b.fields["res_valid"] = cpu.res_valid
        b.instret = instret

    def _export(self, pc: int) -> None:
        cpu, b = self.machine.cpu, self.b
        cpu.x[:] = b.x
        cpu.f[:] = b.f
        cpu.pc = pc
        cpu.fflags, cpu.frm = b.fflags, b.frm
        cpu.res_addr, cpu.res_val = b.fields["res_addr"], b.fields["res_val"]
        cpu.res_valid = b.fields["res_valid"]

    # ---- execution -------------------------------------------------------------------
    def step(self, pc: int) -> int:
        """Execute one instruction at pc on the builder's state; return the next pc.
        Raises Trap or GuestFault (after rolling the instruction back)."""
        b = self.b
        insn = self.fetch_decode(pc)
        b.pc = pc
        b.next_pc = npc = (pc + insn.length) & 0xFFFFFFFFFFFFFFFF
        b.target = None
        b.journal.clear()
        try:
            insn.sem(b, insn)
        except GuestFault:
            b.rollback()
            raise
        except Trap as t:
            if t.kind == "fence.i":     # stores already invalidated stale decodes
                return npc
            b.rollback()
            raise
        return npc if b.target is None else b.target

    def run(self, budget: int, instret: int | None = None) -> Exit:
        """``instret``: instructions retired before this run, when the caller is another
        accelerator mid-run (defaults to the machine's count)."""
        self.stats.runs += 1
        self._import(self.machine.instret if instret is None else instret)
        b = self.b
        pc = self.machine.cpu.pc
        n = 0
        ex = None
        try:
            while n < budget and not self._exit_req:
                pc = self.step(pc)
                n += 1
                b.instret += 1
            if self._exit_req:
                self._exit_req = False
        except Trap as t:
            word = self.fetch_decode(pc).word if t.kind == "illegal" else 0
            ex = Exit(_TRAP_EXIT[t.kind], n, word=word)
        except GuestFault as f:
            ex = Exit(EXIT_FAULT, n, fault_kind=f.kind, fault_addr=f.addr)
        if ex is None:
            ex = Exit(EXIT_BUDGET, n)
        self._export(pc)
        self.stats.exits[ex.name] += 1
        return ex
