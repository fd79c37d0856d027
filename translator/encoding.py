"""Machine-readable instruction encodings, in the style of riscv-opcodes.

Each extension module declares its instructions as text lines::

    addi     rd rs1 imm12          14..12=0 6..2=0x04 1..0=3

name, then operand fields, then fixed bit ranges. Compressed lines may add constraints and
an expansion to their base instruction::

    c.addiw  c_rd_rs1 c_imm6  !rd=0   15..13=1 1..0=1   => addiw

An operand field knows exactly which instruction bits it occupies and where they go in the
operand's value, so the same declaration both decodes (extract) and encodes (insert): the
fuzzer and the tests build instruction words from operands with it. The table tests check
that fields and fixed bits cover every bit exactly once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

# -- operand fields -------------------------------------------------------------------------


@dataclass(frozen=True)
class OperandField:
    """An operand: a set of (word_hi, word_lo, value_lo) placements into attribute ``attr``.

    ``attrs`` lists every Insn attribute the value is written to (c.addi writes rd and rs1),
    ``bias`` is added after extraction (compressed x8..x15 registers), ``signed`` sign-extends
    from the value's top bit, ``width`` is the width of the value.
    """

    name: str
    attrs: tuple[str, ...]
    placements: tuple[tuple[int, int, int], ...]
    width: int
    signed: bool = False
    bias: int = 0
    nonzero: bool = False   # a zero value makes the encoding reserved (decodes illegal)

    @property
    def mask(self) -> int:
        m = 0
        for hi, lo, _ in self.placements:
            m |= ((1 << (hi - lo + 1)) - 1) << lo
        return m

    def extract(self, word: int) -> int:
        v = 0
        for hi, lo, vlo in self.placements:
            v |= ((word >> lo) & ((1 << (hi - lo + 1)) - 1)) << vlo
        if self.signed and v >> (self.width - 1) & 1:
            v -= 1 << self.width
        return v + self.bias

    def insert(self, value: int) -> int:
        """Encode ``value``; raises ValueError if it cannot be represented."""
        v = value - self.bias
        lo_bit = min(vlo for _, _, vlo in self.placements)
        if v & ((1 << lo_bit) - 1):
            raise ValueError(f"{self.name}: {value} is not a multiple of {1 << lo_bit}")
        lim_lo, lim_hi = ((-(1 << (self.width - 1)), (1 << (self.width - 1)) - 1)
                          if self.signed else (0, (1 << self.width) - 1))
        if not lim_lo <= v <= lim_hi:
            raise ValueError(f"{self.name}: {value} out of range")
        v &= (1 << self.width) - 1
        word = 0
        for hi, lo, vlo in self.placements:
            word |= ((v >> vlo) & ((1 << (hi - lo + 1)) - 1)) << lo
        return word

    def values(self) -> range:
        """Every encodable value (used by tests and the fuzzer)."""
        step = 1 << min(vlo for _, _, vlo in self.placements)
        lo, hi = ((-(1 << (self.width - 1)), 1 << (self.width - 1)) if self.signed
                  else (0, 1 << self.width))
        return range(lo + self.bias, hi + self.bias, step)


def _f(name, attrs, placements, width, signed=False, bias=0, nonzero=False):
    if isinstance(attrs, str):
        attrs = (attrs,)
    return OperandField(name, tuple(attrs), tuple(placements), width, signed, bias, nonzero)


OPERAND_FIELDS: dict[str, OperandField] = {f.name: f for f in (
    # 32-bit formats
    _f("rd", "rd", [(11, 7, 0)], 5),
    _f("rs1", "rs1", [(19, 15, 0)], 5),
    _f("rs2", "rs2", [(24, 20, 0)], 5),
    _f("rs3", "rs3", [(31, 27, 0)], 5),
    _f("rm", "rm", [(14, 12, 0)], 3),
    _f("imm12", "imm", [(31, 20, 0)], 12, signed=True),
    _f("simm12", "imm", [(31, 25, 5), (11, 7, 0)], 12, signed=True),
    _f("bimm12", "imm", [(31, 31, 12), (7, 7, 11), (30, 25, 5), (11, 8, 1)], 13, signed=True),
    _f("imm20", "imm", [(31, 12, 12)], 32, signed=True),
    _f("jimm20", "imm", [(31, 31, 20), (19, 12, 12), (20, 20, 11), (30, 21, 1)], 21,
       signed=True),
    _f("shamt6", "imm", [(25, 20, 0)], 6),
    _f("shamt5", "imm", [(24, 20, 0)], 5),
    _f("csr", "csr", [(31, 20, 0)], 12),
    _f("zimm5", "imm", [(19, 15, 0)], 5),
    _f("aq", "aq", [(26, 26, 0)], 1),
    _f("rl", "rl", [(25, 25, 0)], 1),
    _f("fm", "fm", [(31, 28, 0)], 4),
    _f("pred", "pred", [(27, 24, 0)], 4),
    _f("succ", "succ", [(23, 20, 0)], 4),
    # 16-bit formats (RVC); primed registers are x8..x15 / f8..f15
    _f("c_rd", "rd", [(11, 7, 0)], 5),
    _f("c_rs1", "rs1", [(11, 7, 0)], 5),
    _f("c_rd_rs1", ("rd", "rs1"), [(11, 7, 0)], 5),
    _f("c_rs2", "rs2", [(6, 2, 0)], 5),
    _f("c_rdp", "rd", [(4, 2, 0)], 3, bias=8),
    _f("c_rs2p", "rs2", [(4, 2, 0)], 3, bias=8),
    _f("c_rs1p", "rs1", [(9, 7, 0)], 3, bias=8),
    _f("c_rd_rs1p", ("rd", "rs1"), [(9, 7, 0)], 3, bias=8),
    _f("c_nzuimm10", "imm", [(12, 11, 4), (10, 7, 6), (6, 6, 2), (5, 5, 3)], 10, nonzero=True),
    _f("c_uimm7", "imm", [(12, 10, 3), (6, 6, 2), (5, 5, 6)], 7),
    _f("c_uimm8", "imm", [(12, 10, 3), (6, 5, 6)], 8),
    _f("c_imm6", "imm", [(12, 12, 5), (6, 2, 0)], 6, signed=True),
    _f("c_nzimm10", "imm", [(12, 12, 9), (6, 6, 4), (5, 5, 6), (4, 3, 7), (2, 2, 5)], 10,
       signed=True, nonzero=True),
    _f("c_nzimm18", "imm", [(12, 12, 17), (6, 2, 12)], 18, signed=True, nonzero=True),
    _f("c_uimm6", "imm", [(12, 12, 5), (6, 2, 0)], 6),
    _f("c_jimm11", "imm", [(12, 12, 11), (11, 11, 4), (10, 9, 8), (8, 8, 10), (7, 7, 6),
                           (6, 6, 7), (5, 3, 1), (2, 2, 5)], 12, signed=True),
    _f("c_bimm8", "imm", [(12, 12, 8), (11, 10, 3), (6, 5, 6), (4, 3, 1), (2, 2, 5)], 9,
       signed=True),
    _f("c_uimm8sp", "imm", [(12, 12, 5), (6, 4, 2), (3, 2, 6)], 8),
    _f("c_uimm9sp", "imm", [(12, 12, 5), (6, 5, 3), (4, 2, 6)], 9),
    _f("c_uimm8sp_s", "imm", [(12, 9, 2), (8, 7, 6)], 8),
    _f("c_uimm9sp_s", "imm", [(12, 10, 3), (9, 7, 6)], 9),
)}

# -- encodings ------------------------------------------------------------------------------


@dataclass
class Encoding:
    """One line of an encoding table."""

    name: str                      # assembly mnemonic of this encoding (c.addi, addi, ...)
    length: int                    # 2 or 4 bytes
    mask: int
    match: int
    operands: tuple[OperandField, ...]
    ext: str                       # extension module that declared it ("rv64i", ...)
    base: str                      # instruction whose semantics run (compressed: expansion)
    fixed: dict[str, int] = field(default_factory=dict)   # operand values an expansion sets
    forbid: dict[str, int] = field(default_factory=dict)  # operand=value makes it reserved
    require: dict[str, int] = field(default_factory=dict)  # operand must equal value
    sem: Callable | None = None    # the semantics function, bound when the table is built
    line: str = ""

    def matches(self, word: int) -> bool:
        return word & self.mask == self.match

    def encode(self, **ops: int) -> int:
        """Build an instruction word from operand values (the inverse of decoding).
        Values the encoding reserves (a zero ``nonzero`` immediate, a forbidden register)
        raise ValueError: they would decode as something else."""
        word = self.match
        for f in self.operands:
            vals = {ops[a] for a in f.attrs if a in ops}
            if len(vals) > 1:
                raise ValueError(f"{self.name}: {f.attrs} must be equal")
            if not vals:
                raise ValueError(f"{self.name}: missing operand {f.attrs[0]}")
            v = vals.pop()
            if f.nonzero and v == 0:
                raise ValueError(f"{self.name}: {f.attrs[0]} must not be 0")
            word |= f.insert(v)
        for a, v in self.forbid.items():
            if ops.get(a, self.fixed.get(a)) == v:
                raise ValueError(f"{self.name}: {a}={v} is reserved")
        for a, v in self.fixed.items():
            if a in ops and ops[a] != v:
                raise ValueError(f"{self.name}: {a} is fixed to {v}")
        return word


_RANGE = re.compile(r"^(\d+)(?:\.\.(\d+))?=(0x[0-9a-fA-F]+|0b[01]+|\d+)$")
_CONSTRAINT = re.compile(r"^([!=])(\w+)=(-?\d+)$")


def parse_table(text: str, ext: str) -> list[Encoding]:
    """Parse an extension's encoding lines (blank lines and # comments ignored)."""
    out: list[Encoding] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        base = None
        fixed: dict[str, int] = {}
        if "=>" in line:
            line, rhs = (s.strip() for s in line.split("=>", 1))
            parts = rhs.split()
            base = parts[0]
            for p in parts[1:]:
                k, v = p.split("=")
                fixed[k] = int(v, 0)
        toks = line.split()
        name, toks = toks[0], toks[1:]
        length = 2 if name.startswith("c.") else 4
        mask = match = 0
        operands = []
        forbid: dict[str, int] = {}
        require: dict[str, int] = {}
        for t in toks:
            m = _RANGE.match(t)
            if m:
                hi = int(m.group(1))
                lo = int(m.group(2)) if m.group(2) is not None else hi
                val = int(m.group(3), 0)
                width = hi - lo + 1
                if val >> width:
                    raise ValueError(f"{name}: value {val} does not fit bits {hi}..{lo}")
                bits = ((1 << width) - 1) << lo
                if mask & bits:
                    raise ValueError(f"{name}: bits {hi}..{lo} fixed twice")
                mask |= bits
                match |= val << lo
                continue
            c = _CONSTRAINT.match(t)
            if c:
                (forbid if c.group(1) == "!" else require)[c.group(2)] = int(c.group(3))
                continue
            if t not in OPERAND_FIELDS:
                raise ValueError(f"{name}: unknown operand field {t!r}")
            operands.append(OPERAND_FIELDS[t])
        out.append(Encoding(name=name, length=length, mask=mask, match=match,
                            operands=tuple(operands), ext=ext, base=base or name,
                            fixed=fixed, forbid=forbid, require=require, line=raw.strip()))
    return out
