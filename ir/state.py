"""The guest CPU state, declared once.

Everything that needs to know where a register lives — the ctypes view Python uses, the
byte offsets the LLVM lowering addresses, the unicorn register map, snapshots — is derived
from the single field list below. Every field is a little-endian 64-bit slot, so the whole
state is an array of u64 and an offset is ``8 * slot``.

The architectural part (x, f, pc, fcsr, reservation) is what engines exchange and what
snapshots store. The rest is the interface between translated code and the dispatcher.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

# Exit reasons reported by an accelerator run (and returned by translated code).
EXIT_LOOKUP = 0        # translated code left chained code: look state.pc up and go on
EXIT_CHAIN = 1         # an unpatched direct exit; exit_aux holds the slot id
EXIT_MISS = 2          # no translation for state.pc
EXIT_BUDGET = 3        # the instruction budget is spent (or an exit was requested)
EXIT_ECALL = 4         # state.pc is the ecall
EXIT_EBREAK = 5        # state.pc is the ebreak
EXIT_FAULT = 6         # memory fault: fault_kind, fault_addr; state.pc is the instruction
EXIT_ILLEGAL = 7       # illegal instruction at state.pc; exit_aux holds the word
EXIT_SMC = 8           # a store hit a page holding translated code; state.pc is the next insn
EXIT_FENCE_I = 9       # fence.i executed; state.pc is the next insn
EXIT_INTERP_ONE = 10   # run the instruction at state.pc in the reference interpreter
EXIT_HOSTFAULT = 11    # translated code faulted in the host: state.pc is the instruction
EXIT_HOT = 12          # the block at state.pc became hot (it has not run this time)

EXIT_NAMES = {
    EXIT_LOOKUP: "lookup", EXIT_CHAIN: "chain", EXIT_MISS: "miss", EXIT_BUDGET: "budget",
    EXIT_ECALL: "ecall", EXIT_EBREAK: "ebreak", EXIT_FAULT: "fault", EXIT_ILLEGAL: "illegal",
    EXIT_SMC: "smc", EXIT_FENCE_I: "fence.i", EXIT_INTERP_ONE: "interp-one",
    EXIT_HOSTFAULT: "host-fault", EXIT_HOT: "hot",
}
NUM_EXITS = 16

# fault_kind values
FAULT_LOAD = 1       # load from unmapped or unreadable memory
FAULT_STORE = 2      # store (or AMO) to unmapped or unwritable memory
FAULT_FETCH = 3      # instruction fetch from unmapped or non-executable memory
FAULT_MISALIGNED = 4  # misaligned atomic (Linux raises SIGBUS)
FAULT_FETCH_MISALIGNED = 5  # pc not 2-byte aligned: instruction-address-misaligned (SIGBUS)

FAULT_NAMES = {FAULT_LOAD: "load", FAULT_STORE: "store", FAULT_FETCH: "fetch",
               FAULT_MISALIGNED: "misaligned atomic",
               FAULT_FETCH_MISALIGNED: "misaligned fetch"}


@dataclass(frozen=True)
class Field:
    name: str
    count: int = 1
    doc: str = ""


# The declaration. Order is the layout; append new fields at the end of their group.
FIELDS: tuple[Field, ...] = (
    Field("x", 32, "integer registers; x0 is kept at zero by the builder, never written"),
    Field("f", 32, "FP registers as raw 64-bit patterns (singles NaN-boxed)"),
    Field("pc", 1, "program counter"),
    Field("fflags", 1, "accrued FP exception flags (NV DZ OF UF NX = bits 4..0)"),
    Field("frm", 1, "dynamic rounding mode (0..7; 5..7 make dynamic-rm FP ops illegal)"),
    Field("res_addr", 1, "LR/SC reservation address"),
    Field("res_val", 1, "value loaded by the LR (SC compares against it, like QEMU)"),
    Field("res_valid", 1, "1 while a reservation is held"),
    # ---- dispatcher interface (not architectural) ----
    Field("icount", 1, "instructions retired (translated code adds a block's length on entry)"),
    Field("icount_limit", 1, "a block runs only if icount stays <= this; 0 forces an exit"),
    Field("exit_aux", 1, "extra exit information (chain slot id, instruction word)"),
    Field("fault_kind", 1, "FAULT_* for EXIT_FAULT"),
    Field("fault_addr", 1, "faulting guest address for EXIT_FAULT"),
    Field("guest_base", 1, "host address of guest address 0 in the guest view"),
    Field("addr_limit", 1, "size of the guest address space (kept in a register by blocks)"),
    # ---- profiling (used only by code translated with profiling on) ----
    Field("prof_counts", 1, "host address of the block execution counters (u64 per block id)"),
    Field("prof_slots", 1, "host address of the chain-slot transition counters"),
    Field("prof_edges", 1, "host address of the dynamic edge table {key, count}"),
    Field("prof_last", 1, "block id | kind << 24 of a dynamic exit not yet recorded"),
    Field("hot_counts", 1, "host address of the first-tier hotness counters (per block id)"),
    Field("ulog", 1, "host address of the regions' undo log {guest address, old value}"),
    Field("ulog_n", 1, "entries in the undo log since the region's last checkpoint"),
    # ---- write log (used only by code translated for the differential tester) ----
    Field("wlog", 1, "host address of the store-address log (u64 ring of WLOG_SIZE)"),
    Field("wlog_n", 1, "stores logged so far"),
    Field("host_pc", 1, "host pc of a host fault in translated code"),
    Field("host_err", 1, "x86 page-fault error code of a host fault (bit 1: write)"),
    Field("x_sink", 1, "where stencils write x[rd] when rd is x0 (never read)"),
)

XLEN_MASK = (1 << 64) - 1


def _layout() -> dict[str, int]:
    slots: dict[str, int] = {}
    n = 0
    for f in FIELDS:
        slots[f.name] = n
        n += f.count
    slots["__size__"] = n
    return slots


SLOTS = _layout()
NUM_SLOTS = SLOTS.pop("__size__")


def offset(name: str, index: int = 0) -> int:
    """Byte offset of ``name[index]`` in the state."""
    return 8 * (SLOTS[name] + index)


def x_offset(r: int) -> int:
    return 8 * (SLOTS["x"] + r)


def f_offset(r: int) -> int:
    return 8 * (SLOTS["f"] + r)


class CPUState(ctypes.Structure):
    """ctypes view of the state, generated from FIELDS."""

    _fields_ = [(f.name, ctypes.c_uint64 * f.count if f.count > 1 else ctypes.c_uint64)
                for f in FIELDS]

    # Architectural fields: what engines exchange and snapshots store.
    ARCH_SCALARS = ("pc", "fflags", "frm", "res_addr", "res_val", "res_valid")

    @property
    def fcsr(self) -> int:
        return ((self.frm & 7) << 5) | (self.fflags & 0x1F)

    @fcsr.setter
    def fcsr(self, value: int) -> None:
        self.frm = (value >> 5) & 7
        self.fflags = value & 0x1F

    def arch(self) -> dict:
        """The architectural state as plain Python values (for comparisons and snapshots)."""
        d = {"x": list(self.x), "f": list(self.f)}
        for name in self.ARCH_SCALARS:
            d[name] = getattr(self, name)
        d["x"][0] = 0
        return d

    def set_arch(self, d: dict) -> None:
        for i, v in enumerate(d["x"]):
            self.x[i] = v if i else 0
        for i, v in enumerate(d["f"]):
            self.f[i] = v
        for name in self.ARCH_SCALARS:
            setattr(self, name, d[name])

    def copy_from(self, other: "CPUState") -> None:
        ctypes.memmove(ctypes.addressof(self), ctypes.addressof(other), ctypes.sizeof(CPUState))


assert ctypes.sizeof(CPUState) == 8 * NUM_SLOTS
for _f in FIELDS:
    assert getattr(CPUState, _f.name).offset == offset(_f.name), _f.name

# ABI register names, used by the disassembler, traces and the unicorn map.
X_NAMES = ("zero", "ra", "sp", "gp", "tp", "t0", "t1", "t2", "s0", "s1", "a0", "a1", "a2",
           "a3", "a4", "a5", "a6", "a7", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9",
           "s10", "s11", "t3", "t4", "t5", "t6")
F_NAMES = ("ft0", "ft1", "ft2", "ft3", "ft4", "ft5", "ft6", "ft7", "fs0", "fs1", "fa0",
           "fa1", "fa2", "fa3", "fa4", "fa5", "fa6", "fa7", "fs2", "fs3", "fs4", "fs5",
           "fs6", "fs7", "fs8", "fs9", "fs10", "fs11", "ft8", "ft9", "ft10", "ft11")
