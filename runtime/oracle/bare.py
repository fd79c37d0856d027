"""A machine without a program: instruction words and data placed straight into memory.

Directed tests, the differential fuzzer and notebooks use it to run a few instructions on
any accelerator from an exactly specified state, without an ELF, a libc or syscalls.
``ecall`` and faults simply stop the run.
"""

from __future__ import annotations

from dbtlab.ir.state import CPUState
from dbtlab.runtime.accel.base import Exit
from dbtlab.runtime.config import RunConfig
from dbtlab.runtime.linux.memory import PAGE_SIZE, PROT_EXEC, PROT_READ, PROT_WRITE, GuestMemory

CODE_BASE = 0x10000
DATA_BASE = 0x80000
DATA_SIZE = 0x4000


class _NoProgram:
    entry = CODE_BASE

    @staticmethod
    def symbol_at(pc: int):
        return None


class BareMachine:
    """Code at CODE_BASE (r-x), a scratch data window at DATA_BASE (rw-)."""

    def __init__(self, code: bytes | list[int], *, accel: str = "interp",
                 config: RunConfig | None = None, data: bytes = b"",
                 data_base: int = DATA_BASE, data_size: int = DATA_SIZE,
                 code_prot: int = PROT_READ | PROT_EXEC) -> None:
        from dbtlab.runtime.accel import make_accel
        if isinstance(code, list):
            code = b"".join(w.to_bytes(2 if w & 3 != 3 else 4, "little") for w in code)
        self.code = code
        self.config = config or RunConfig(accel=accel)
        self.config.accel = accel
        self.mem = GuestMemory()
        size = max(PAGE_SIZE, (len(code) + PAGE_SIZE) & ~(PAGE_SIZE - 1))
        self.mem.map(CODE_BASE, size, PROT_READ | PROT_WRITE)
        self.mem.poke(CODE_BASE, code)
        self.mem.protect(CODE_BASE, size, code_prot)
        self.code_end = CODE_BASE + len(code)
        if data_size:
            self.mem.map(data_base, data_size, PROT_READ | PROT_WRITE)
            if data:
                self.mem.poke(data_base, data)
        self.program = _NoProgram()
        self.cpu = CPUState()
        self.cpu.pc = CODE_BASE
        self.instret = 0
        self.accel = make_accel(accel, self)

    def where_symbol(self, pc: int) -> str:
        return f"{pc:#x}"

    def run(self, budget: int = 1 << 40) -> Exit:
        """Run until the code ends (an ecall or falling off the end faults) or budget."""
        ex = self.accel.run(budget)
        self.instret += ex.executed
        return ex

    def close(self) -> None:
        self.accel.close()
        self.mem.close()
