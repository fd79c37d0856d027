"""The machine: guest memory, the Linux process and one accelerator that executes.

``Machine.run`` is the user-mode main loop: it lets the accelerator execute until something
needs the machine (a syscall, a fault, an illegal instruction, the instruction budget),
handles it, and goes on until the guest exits or dies. Everything here is shared by all
accelerators; only ``accel.run`` differs.
"""

from __future__ import annotations

import logging
import signal as _signal
import time
from dataclasses import dataclass, field

from dbtlab.ir.state import (EXIT_BUDGET, EXIT_EBREAK, EXIT_ECALL, EXIT_FAULT, EXIT_ILLEGAL,
                             FAULT_FETCH, FAULT_FETCH_MISALIGNED, FAULT_LOAD,
                             FAULT_MISALIGNED, FAULT_NAMES, FAULT_STORE, CPUState)
from dbtlab.runtime.accel import make_accel
from dbtlab.runtime.config import RunConfig
from dbtlab.runtime.errors import DbtError
from dbtlab.runtime.linux.loader import StartConfig, load_elf
from dbtlab.runtime.linux.memory import GuestFault, GuestMemory
from dbtlab.runtime.linux.process import Process
from dbtlab.runtime.linux.syscalls import handle_syscall

log = logging.getLogger(__name__)

#: instructions per accelerator run when no limit is set (bounds time between checks
#: of Python-side conditions; translated code does not return to Python for it)
RUN_CHUNK = 1 << 62
#: ``Machine.instret`` is the guest's 64-bit instret: it wraps modulo 2**64, as the counter
#: the guest reads (rdinstret) does, on every accelerator
INSTRET_MASK = (1 << 64) - 1


@dataclass
class RunResult:
    """How the guest ended."""

    status: int | None           # exit status, if it exited
    signal: int | None           # terminating signal, if it was killed
    instret: int                 # instructions retired
    wall: float                  # seconds in run()
    message: str = ""            # for a signal death: what happened, with pc and insn
    stopped: bool = False        # stopped by max_insns before exiting
    stats: dict = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """The shell's view: status, 128+signal, or 0 when stopped by max_insns."""
        if self.signal is not None:
            return 128 + self.signal
        return self.status if self.status is not None else 0


class Machine:
    """A loaded guest program, ready to run under one accelerator."""

    def __init__(self, program: str, argv: list[str] | None = None, *,
                 env: list[str] | None = None, config: RunConfig | None = None,
                 start: StartConfig | None = None, stdin: int = 0, stdout: int = 1,
                 stderr: int = 2) -> None:
        self.config = config or RunConfig()
        self.mem = GuestMemory()
        if start is None:
            start = StartConfig(argv=list(argv) if argv else [program],
                                env=list(env) if env is not None else [], exec_path=program)
        self.start = start
        self.program = load_elf(self.mem, program, start)
        self.proc = Process(self.mem, self.program, start, stdin=stdin, stdout=stdout,
                            stderr=stderr, strace=self.config.strace,
                            time_mode=self.config.time_mode)
        self.proc.instret_source = lambda: self.instret
        self.cpu = CPUState()
        self.cpu.pc = self.program.entry
        self.cpu.x[2] = self.program.sp
        self.instret = 0
        self._stop_req = False        # request_stop() was called (any thread)
        self.accel = make_accel(self.config.accel, self)

    # ---- running ---------------------------------------------------------------------
    def run(self, stop_at: int | None = None) -> RunResult:
        """Run until the guest exits or dies, or until ``stop_at`` instructions have been
        retired in total (then ``stopped`` is set and ``run`` may be called again to go
        on exactly where it stopped). ``config.max_insns`` is a stop_at for the whole run."""
        t0 = time.perf_counter()
        limits = [x for x in (self.config.max_insns, stop_at) if x is not None]
        res = self._loop(min(limits) if limits else None)
        res.wall = time.perf_counter() - t0
        res.stats = self.stats()
        return res

    # ---- stop requests (the main loop's vCPU thread: runtime/monitor/mainloop.py) ------------------
    def request_stop(self) -> None:
        """Make a ``run`` in progress in another thread return promptly with
        ``stopped=True`` (QEMU's cpu_exit): the flag is checked each time the accelerator
        returns to this loop, and ``accel.request_exit`` makes it return (llvm: at the next
        block entry, where it checks its instruction limit anyway; interp: after the current
        instruction). A request made while no ``run`` is in progress stops the next one
        before it executes anything. Accelerators without ``request_exit`` stop at their next
        exit to this loop; their callers run them in bounded chunks (``stop_at``)."""
        self._stop_req = True
        try:
            self.accel.request_exit()
        except NotImplementedError:
            pass

    @property
    def exited(self) -> bool:
        return self.proc.exit_status is not None or self.proc.killed_by is not None

    def _retire(self, n: int) -> None:
        self.instret = (self.instret + n) & INSTRET_MASK

    def _loop(self, limit: int | None) -> RunResult:
        proc = self.proc
        # what is left of the limit is counted down, so that a limit past the point where
        # instret wraps (2**64) still stops exactly that many instructions later
        left = None if limit is None else limit - self.instret
        while True:
            if self._stop_req:                 # request_stop(): once per return from accel
                self._stop_req = False
                return RunResult(None, None, self.instret, 0.0, stopped=True,
                                 message=f"stopped on request after {self.instret} "
                                         f"instructions at pc {self.cpu.pc:#x}")
            budget = RUN_CHUNK if left is None else min(left, RUN_CHUNK)
            if budget <= 0:
                return RunResult(None, None, self.instret, 0.0, stopped=True,
                                 message=f"stopped after {self.instret} instructions "
                                         f"at pc {self.cpu.pc:#x}")
            ex = self.accel.run(budget)
            self._retire(ex.executed)
            if left is not None:
                left -= ex.executed
            if ex.reason == EXIT_ECALL:
                handle_syscall(proc, self.cpu)
                self._retire(1)            # the ecall itself retires
                if left is not None:
                    left -= 1
                if proc.exit_status is not None:
                    return RunResult(proc.exit_status, None, self.instret, 0.0)
                if proc.killed_by is not None:
                    return RunResult(None, proc.killed_by, self.instret, 0.0,
                                     message=f"killed by {_signame(proc.killed_by)}")
                self.cpu.pc = (self.cpu.pc + 4) & 0xFFFFFFFFFFFFFFFF
            elif ex.reason == EXIT_BUDGET:
                continue
            elif ex.reason == EXIT_FAULT:
                # Linux: SIGBUS (BUS_ADRALN) for misaligned atomics and for an
                # instruction-address-misaligned trap, SIGSEGV for the rest
                sig = _signal.SIGBUS if ex.fault_kind in (
                    FAULT_MISALIGNED, FAULT_FETCH_MISALIGNED) else _signal.SIGSEGV
                what = FAULT_NAMES.get(ex.fault_kind, "access")
                adj = {FAULT_LOAD: "load from", FAULT_STORE: "store to",
                       FAULT_FETCH: "instruction fetch from",
                       FAULT_FETCH_MISALIGNED: "misaligned instruction fetch from",
                       FAULT_MISALIGNED: "misaligned atomic access to"}.get(ex.fault_kind, what)
                return self._die(int(sig), f"{adj} address {ex.fault_addr:#x}",
                                 insn=ex.fault_kind != FAULT_FETCH_MISALIGNED)
            elif ex.reason == EXIT_ILLEGAL:
                return self._die(int(_signal.SIGILL), "illegal instruction")
            elif ex.reason == EXIT_EBREAK:
                return self._die(int(_signal.SIGTRAP), "breakpoint (ebreak)")
            else:
                raise RuntimeError(f"accelerator {self.accel.name} returned {ex.name}")

    def _die(self, sig: int, what: str, insn: bool = True) -> RunResult:
        """``insn``: show the instruction at pc (not for a misaligned pc: nothing was
        fetched there)."""
        pc = self.cpu.pc
        return RunResult(None, sig, self.instret, 0.0,
                         message=f"guest killed by {_signame(sig)}: {what} at pc {pc:#x}"
                                 f"{self.where(pc, insn)}")

    def where_symbol(self, pc: int) -> str:
        """'0x... <sym+off>' for traces."""
        sym = self.program.symbol_at(pc)
        if not sym:
            return f"{pc:#x}"
        name, off = sym
        return f"{pc:#x} <{name}+{off:#x}>" if off else f"{pc:#x} <{name}>"

    def where(self, pc: int, insn: bool = True) -> str:
        """' <sym+off>: <insn>' for messages, as far as it can be known."""
        out = ""
        sym = self.program.symbol_at(pc)
        if sym:
            name, off = sym
            out += f" <{name}+{off:#x}>" if off else f" <{name}>"
        if not insn:
            return out
        try:
            lo = int.from_bytes(self.mem.peek(pc, 2), "little")
            word = lo if lo & 3 != 3 else int.from_bytes(self.mem.peek(pc, 4), "little")
        except GuestFault:
            return out
        from dbtlab.translator.decode import decode
        insn = decode(word)
        try:
            from dbtlab.translator.disasm import disasm
            text = disasm(insn, pc).replace("\t", " ")
        except ImportError:
            text = insn.mnemonic
        return out + f": {insn.hex()} {text}"

    def profile(self, result: "RunResult | None" = None) -> dict:
        """The profile document of this run (RunConfig(profile=True), llvm accelerator)."""
        rec = getattr(self.accel, "profiler", None)
        if rec is None:
            raise DbtError("no profile: run with RunConfig(profile=True) and accel llvm")
        return rec.document(result)

    def stats(self) -> dict:
        d = {"accel": self.accel.name, "instret": self.instret}
        d.update(self.accel.stats.as_dict())
        return d

    def close(self) -> None:
        self.accel.close()
        self.proc.close()
        self.mem.close()

    def __enter__(self) -> "Machine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _signame(sig: int) -> str:
    try:
        return _signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"
