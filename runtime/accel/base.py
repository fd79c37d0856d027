"""What every accelerator provides: run guest code from the machine's CPU state until
something the machine must handle (a syscall, a fault, the budget) happens.

The machine — memory, process, syscalls — is shared; accelerators only execute. The
canonical CPU state is ``machine.cpu`` (a ``CPUState``): an accelerator reads it at the
start of ``run`` and writes it back before returning, so engines can be switched, compared
and snapshotted between runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dbtlab.ir.state import EXIT_NAMES

if TYPE_CHECKING:
    from dbtlab.runtime.machine import Machine


@dataclass
class Exit:
    """Why ``run`` returned. ``executed`` counts retired instructions in this run."""

    reason: int
    executed: int
    fault_kind: int = 0
    fault_addr: int = 0
    word: int = 0          # the instruction word for EXIT_ILLEGAL
    detail: str = ""

    @property
    def name(self) -> str:
        return EXIT_NAMES.get(self.reason, str(self.reason))


@dataclass
class AccelStats:
    """Counters every accelerator keeps; the llvm one adds translation statistics."""

    exits: Counter = field(default_factory=Counter)   # exits to Python by reason name
    runs: int = 0

    def as_dict(self) -> dict:
        return {"runs": self.runs, "exits": dict(self.exits)}


class Accelerator(ABC):
    name: str = "?"

    def __init__(self, machine: "Machine") -> None:
        self.machine = machine
        self.stats = AccelStats()

    @abstractmethod
    def run(self, budget: int) -> Exit:
        """Execute at most ``budget`` instructions from ``machine.cpu``."""

    def request_exit(self) -> None:
        """Make a ``run`` in progress (in another thread) return EXIT_BUDGET promptly, as
        QEMU's exit request does; the machine then serves whatever asked (a monitor
        command, a migration). Every accelerator implements it."""
        raise NotImplementedError

    def enable_write_log(self) -> None:
        """Start recording which guest pages get written (the differential tester
        compares exactly those). Python-side writes are recorded by the memory itself;
        accelerators that write guest memory natively add theirs."""
        if self.machine.mem.write_log is None:
            self.machine.mem.write_log = set()

    def take_written_pages(self) -> set[int]:
        """Pages written since the last call (requires enable_write_log)."""
        log = self.machine.mem.write_log
        if log is None:
            raise RuntimeError("write log not enabled")
        out = set(log)
        log.clear()
        return out

    def invalidate_all(self) -> None:
        """Forget all cached translations (after the machine's code changed behind our
        back, e.g. a snapshot was loaded)."""

    def close(self) -> None:
        """Release native resources."""
