"""Helpers for the directed instruction tests (tests/ir/test_directed_*.py).

* ``Asm`` builds a program from mnemonics and operands, with labels for branch and jump
  offsets; ``run`` executes one on a ``BareMachine`` and returns a snapshot of the final
  state (the machine is always closed).
* ``Case`` / ``check_cases`` batch many independent checks into one program: each case
  loads its inputs from its own slots of the data window, runs its instruction(s), stores
  its outputs and the accrued fflags (clearing them) back to its slots. One compilation
  per batch keeps the llvm runs cheap.
* ``covers`` declares which mnemonics a test covers. At import the declarations fill
  ``COVERAGE`` (test_directed_sys checks it equals the decoder's TABLE); at run time the
  test fails unless every declared mnemonic appeared in a program it ran.

Expected values never come from our engines: they are constants, Python arithmetic, or the
independent IEEE reference in ``ieee_ref``.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from dbtlab.runtime.accel.base import Exit
from dbtlab.runtime.oracle.bare import CODE_BASE, DATA_BASE, DATA_SIZE, BareMachine
from dbtlab.translator.decode import BY_NAME, decode, encode

M64 = (1 << 64) - 1
DATA_END = DATA_BASE + DATA_SIZE
PAGE = 4096

# CSR numbers (ISA manual, typed in here independently of the implementation)
FFLAGS, FRM, FCSR, CYCLE, TIME, INSTRET = 0x001, 0x002, 0x003, 0xC00, 0xC01, 0xC02


def s64(v: int) -> int:
    v &= M64
    return v - (1 << 64) if v >> 63 else v


def u64(v: int) -> int:
    return v & M64


def sext32(v: int) -> int:
    v &= 0xFFFFFFFF
    return (v | 0xFFFFFFFF00000000) if v >> 31 else v


# -- coverage ----------------------------------------------------------------------------

COVERAGE: dict[str, set[str]] = {}
_active: list[set[str]] = []


def covers(*names: str):
    """Declare the mnemonics a test covers (see the module docstring)."""
    unknown = set(names) - BY_NAME.keys()
    if unknown:
        raise ValueError(f"not in the decoder's TABLE: {sorted(unknown)}")

    def deco(fn):
        for n in names:
            COVERAGE.setdefault(n, set()).add(f"{fn.__module__}.{fn.__name__}")

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            seen: set[str] = set()
            _active.append(seen)
            try:
                fn(*args, **kwargs)
            finally:
                _active.pop()
            missing = set(names) - seen
            assert not missing, f"declared as covered but never run: {sorted(missing)}"
        return wrapper
    return deco


def _record(code: bytes) -> None:
    if not _active:
        return
    i = 0
    while i + 2 <= len(code):
        lo = int.from_bytes(code[i:i + 2], "little")
        if lo & 3 == 3:
            if i + 4 > len(code):
                break
            word, n = int.from_bytes(code[i:i + 4], "little"), 4
        else:
            word, n = lo, 2
        mn = decode(word).mnemonic
        for s in _active:
            s.add(mn)
        i += n


# -- programs ----------------------------------------------------------------------------

def insn_size(word: int) -> int:
    return 4 if word & 3 == 3 else 2


def to_bytes(code) -> bytes:
    if isinstance(code, (bytes, bytearray)):
        return bytes(code)
    return b"".join(w.to_bytes(insn_size(w), "little") for w in code)


class Asm:
    """A program: ``a("addi", rd=1, rs1=0, imm=5)``; ``a.label("L")``; an ``imm`` given as a
    label name becomes the offset from the instruction to the label. Raw words with
    ``a.word(w)``."""

    def __init__(self) -> None:
        self.items: list[tuple] = []
        self.labels: dict[str, int] = {}
        self.size = 0

    def __call__(self, name: str, **ops) -> "Asm":
        self.items.append(("insn", self.size, name, ops))
        self.size += 2 if name.startswith("c.") else 4
        return self

    def word(self, w: int, size: int | None = None) -> "Asm":
        size = size or insn_size(w)
        self.items.append(("word", self.size, w, size))
        self.size += size
        return self

    def label(self, name: str) -> "Asm":
        self.labels[name] = self.size
        return self

    def addr(self, label: str) -> int:
        return CODE_BASE + self.labels[label]

    @property
    def pc(self) -> int:
        """Address of the next instruction to be added."""
        return CODE_BASE + self.size

    def ecall(self) -> "Asm":
        return self("ecall")

    def build(self) -> bytes:
        out = bytearray()
        for it in self.items:
            if it[0] == "word":
                out += it[2].to_bytes(it[3], "little")
                continue
            _, off, name, ops = it
            ops = {k: (self.labels[v] - off if isinstance(v, str) else v)
                   for k, v in ops.items()}
            w = encode(name, **ops)
            out += w.to_bytes(2 if name.startswith("c.") else 4, "little")
        return bytes(out)


@dataclass
class Run:
    """The state after a run."""

    exit: Exit
    x: list[int]
    f: list[int]
    pc: int
    fflags: int
    frm: int
    res_valid: int
    data: bytes
    instret: int

    @property
    def why(self) -> str:
        return self.exit.name

    def mem(self, addr: int, n: int = 8, signed: bool = False) -> int:
        off = addr - DATA_BASE
        return int.from_bytes(self.data[off:off + n], "little", signed=signed)


@contextmanager
def machine(accel: str, code, *, x: dict | None = None, f: dict | None = None,
            fflags: int = 0, frm: int = 0, data: bytes = b"", **kw) -> Iterator[BareMachine]:
    """A BareMachine with the given initial state (closed on exit)."""
    code = code.build() if isinstance(code, Asm) else to_bytes(code)
    _record(code)
    m = BareMachine(code, accel=accel, data=data, **kw)
    try:
        for r, v in (x or {}).items():
            m.cpu.x[r] = u64(v)
        for r, v in (f or {}).items():
            m.cpu.f[r] = u64(v)
        m.cpu.fflags, m.cpu.frm = fflags, frm
        yield m
    finally:
        m.close()


def snapshot(m: BareMachine, ex: Exit) -> Run:
    c = m.cpu
    return Run(ex, list(c.x), list(c.f), c.pc, c.fflags, c.frm, c.res_valid,
               m.mem.peek(DATA_BASE, DATA_SIZE), m.instret)


def run(accel: str, code, *, budget: int = 1 << 20, setup=None, **kw) -> Run:
    """Run a program until it stops; ``setup(m)`` may adjust the machine first."""
    with machine(accel, code, **kw) as m:
        if setup:
            setup(m)
        return snapshot(m, m.run(budget))


def pattern_state() -> tuple[dict[int, int], dict[int, int]]:
    """Distinct recognisable values for x1..x31 and f0..f31 (for precision checks)."""
    x = {r: (0x1111111111111111 * (r % 15 + 1) + r) & M64 for r in range(1, 32)}
    f = {r: (0xF0E0D0C0B0A09080 ^ (r * 0x0101010101010101)) & M64 for r in range(32)}
    return x, f


def check_precise_stops(accel: str, steps: list, regs: dict[int, int] | None = None, *,
                        data: bytes = b"", fflags: int = 0x15, frm: int = 3) -> None:
    """Instructions that must stop the run without any effect, in one program.

    ``steps``: (insn, exit name, fault kind, fault address), insn being (mnemonic,
    operands) or a raw instruction word. The program runs a marker (x31 += 1) before each
    step; each run must stop at the step's instruction with that exit (for 'illegal', with
    the word in ``exit.word``; for 'fault', with that kind and address), the marker done —
    its effect stays and ``executed`` counts exactly it — and every register, fflags, frm
    and the data window exactly as before the stopping instruction. The test then resumes
    after it. Registers start as in pattern_state(), overridden by ``regs``."""
    a = Asm()
    pcs, sizes = [], []
    for insn, _, _, _ in steps:
        a("addi", rd=31, rs1=31, imm=1)
        pcs.append(a.pc)
        if isinstance(insn, int):
            a.word(insn)
            sizes.append(insn_size(insn))
        else:
            a(insn[0], **insn[1])
            sizes.append(2 if insn[0].startswith("c.") else 4)
    a.ecall()
    x, f = pattern_state()
    x.update(regs or {})
    x[31] = 0
    with machine(accel, a, x=x, f=f, fflags=fflags, frm=frm, data=data) as m:
        for k, (insn, why, kind, addr) in enumerate(steps):
            want_x = list(m.cpu.x)
            want_x[31] += 1                      # the marker ran
            want_f = list(m.cpu.f)
            want_mem = m.mem.peek(DATA_BASE, DATA_SIZE)
            n0 = m.instret
            ex = m.run(1000)
            what = f"step {k} ({insn if isinstance(insn, tuple) else hex(insn)})"
            assert ex.name == why, f"{what}: {ex}"
            if why == "fault":
                assert (ex.fault_kind, ex.fault_addr) == (kind, addr), (
                    f"{what}: fault kind {ex.fault_kind} at {ex.fault_addr:#x}, "
                    f"expected kind {kind} at {addr:#x}")
            if why == "illegal":
                word = insn if isinstance(insn, int) else encode(insn[0], **insn[1])
                assert ex.word == word, f"{what}: exit word {ex.word:#x}"
            assert m.cpu.pc == pcs[k], f"{what}: pc {m.cpu.pc:#x}, expected {pcs[k]:#x}"
            assert ex.executed == 1 and m.instret == n0 + 1, f"{what}: executed {ex.executed}"
            assert list(m.cpu.x) == want_x, f"{what}: x registers changed"
            assert list(m.cpu.f) == want_f, f"{what}: f registers changed"
            assert (m.cpu.fflags, m.cpu.frm) == (fflags, frm), f"{what}: fcsr changed"
            assert m.mem.peek(DATA_BASE, DATA_SIZE) == want_mem, f"{what}: memory changed"
            m.cpu.pc = pcs[k] + sizes[k]
        ex = m.run(1000)
        assert ex.name == "ecall", ex


# -- batched cases -----------------------------------------------------------------------

@dataclass
class Case:
    """One independent check: inputs loaded into registers, instruction(s), outputs.

    ``insns`` is a list of (mnemonic, operands); ``xin``/``fin`` map register -> 64-bit
    value (f values are raw patterns: box singles yourself); ``expect`` maps "x5", "f3" or
    "flags" to the expected value (the outputs stored are exactly the keys of expect).
    ``frm`` sets the dynamic rounding mode before the instructions. x30 and x31 belong to
    the harness."""

    insns: list
    expect: dict
    xin: dict = field(default_factory=dict)
    fin: dict = field(default_factory=dict)
    frm: int | None = None
    label: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.insns, tuple):
            self.insns = [self.insns]
        regs = set(self.xin) | {int(k[1:]) for k in self.expect if k.startswith("x")}
        assert not regs & {30, 31}, f"{self.label}: x30/x31 are reserved for the harness"


_BASE, _FLAGREG = 31, 30


def _case_code(a: Asm, c: Case) -> int:
    """Append the code of one case; return the number of 8-byte slots it uses."""
    slot = 0
    if c.frm is not None:
        a("csrrwi", rd=0, imm=c.frm, csr=FRM)
    for r in c.xin:
        a("ld", rd=r, rs1=_BASE, imm=8 * slot)
        slot += 1
    for r in c.fin:
        a("fld", rd=r, rs1=_BASE, imm=8 * slot)
        slot += 1
    for name, ops in c.insns:
        a(name, **ops)
    for k in c.expect:
        if k == "flags":
            a("csrrw", rd=_FLAGREG, rs1=0, csr=FFLAGS)
            a("sd", rs1=_BASE, rs2=_FLAGREG, imm=8 * slot)
        elif k.startswith("x"):
            a("sd", rs1=_BASE, rs2=int(k[1:]), imm=8 * slot)
        else:
            a("fsd", rs1=_BASE, rs2=int(k[1:]), imm=8 * slot)
        slot += 1
    a("addi", rd=_BASE, rs1=_BASE, imm=8 * slot)
    if c.frm == 4 or any(ops.get("rm") == 4 for _, ops in c.insns):
        # The JIT may hand round-to-nearest-max-magnitude to the interpreter and resume
        # after it in a fresh block; ending the case's block here keeps that fresh block
        # short instead of re-translating the rest of the program after every such case.
        a("jal", rd=0, imm=4)
    return slot


SENTINEL = 0x5EE5EE5EE5EE5EE5
#: the cases' slots use the first half of the data window; the second half is scratch
#: memory for the instructions under test (it contains a page boundary at SCRATCH + 0x1000)
SLOTS_SIZE = DATA_SIZE // 2
SCRATCH = DATA_BASE + SLOTS_SIZE


def run_cases(accel: str, cases: list[Case], *, fflags: int = 0, frm: int = 0,
              scratch: bytes = b"") -> list[dict[str, int]]:
    """Run cases in as few programs as fit the slot area; return each case's outputs.
    ``scratch`` is the initial content of the scratch memory (at SCRATCH) for every
    program."""
    assert len(scratch) <= DATA_SIZE - SLOTS_SIZE
    out: list[dict[str, int]] = []
    i = 0
    while i < len(cases):
        a = Asm()
        data = bytearray()
        chunk = []
        while i < len(cases):
            c = cases[i]
            n_in = len(c.xin) + len(c.fin)
            n = n_in + len(c.expect)
            if len(data) + 8 * n > SLOTS_SIZE:
                break
            vals = list(c.xin.values()) + list(c.fin.values()) + [SENTINEL] * len(c.expect)
            data += b"".join(u64(v).to_bytes(8, "little") for v in vals)
            _case_code(a, c)
            chunk.append((c, len(data) - 8 * n + 8 * n_in))
            i += 1
        assert chunk, "a case needs more slots than the data window has"
        a.ecall()
        if scratch:
            data += bytes(SLOTS_SIZE - len(data)) + scratch
        r = run(accel, a, x={_BASE: DATA_BASE}, data=bytes(data), fflags=fflags, frm=frm)
        assert r.why == "ecall", (f"batch stopped early: {r.exit} at pc {r.pc:#x} "
                                  f"(first case {chunk[0][0].label!r})")
        for c, off in chunk:
            res = {}
            for k in c.expect:
                res[k] = r.mem(DATA_BASE + off)
                off += 8
            out.append(res)
    return out


def fmt_val(v) -> str:
    return f"{v:#x}" if isinstance(v, int) else repr(v)


def check_cases(accel: str, cases: list[Case], **kw) -> None:
    """Run the cases and fail with every mismatch listed."""
    got = run_cases(accel, cases, **kw)
    bad = []
    for c, g in zip(cases, got):
        for k, want in c.expect.items():
            if g[k] != u64(want):
                bad.append(f"{c.label or c.insns}: {k} = {fmt_val(g[k])}, expected "
                           f"{fmt_val(u64(want))}")
    assert not bad, f"{len(bad)} mismatches on {accel}:\n" + "\n".join(bad)


def ins(name: str, **ops) -> tuple[str, dict]:
    return (name, ops)
