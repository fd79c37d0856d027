"""Random RV64GC instruction streams with configurable weights per instruction class.

Every instruction word is built from the machine-readable encoding table
(``translator.decode.TABLE``: operand fields that ``insert`` values), so each class covers
every instruction of its kind, compressed forms included, and the illegal class builds its
words from the same table (reserved values of ``nonzero`` fields and forbidden registers,
reserved rounding modes, undefined opcodes).

Memory accesses stay inside the scratch window of :class:`BareMachine`: a case reserves
*pointer registers* (``sp``, one of ``x8``–``x15`` for the compressed forms, one more)
holding addresses in the window, which no generated instruction writes; each access picks
a target address first — aligned, misaligned, or straddling one of the window's inner page
boundaries — and then a pointer and an offset that reach it. Atomics address a temporary
register set from a pointer in the same item. Branches and jumps name an item of the
stream (or its terminator) as their target; backward ones make loops that the instruction
budget ends. The classes that end a case on purpose (``system``, ``illegal``, ``fault``,
``misaligned_atomic``) have small weights.

Registers: per case a few "hot" registers are drawn from more often, so results feed later
instructions and operand combinations (inf × 0 + qNaN, a signalling NaN into fmin) occur.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass

from dbtlab.runtime.oracle.bare import DATA_BASE
from dbtlab.runtime.oracle.fuzz.case import WINDOW as DATA_SIZE
from dbtlab.runtime.oracle.fuzz.case import Case, Item
from dbtlab.runtime.oracle.fuzz.values import (TABLE, TABLE_F32, TABLE_F64, TABLE_UNBOXED, Pools,
                                        random_f, random_x)
from dbtlab.runtime.linux.memory import PAGE_SIZE
from dbtlab.translator.decode import BY_NAME, decode, encode
from dbtlab.translator.encoding import Encoding

M64 = (1 << 64) - 1

from dbtlab.runtime.oracle.fuzz.weights import DEFAULT_WEIGHTS  # noqa: E402  (re-exported)

CLASSES = tuple(DEFAULT_WEIGHTS)


def parse_weights(text: str | None, base: dict[str, float] | None = None) -> dict[str, float]:
    """``"alu=10,fp_arith=0"`` over the defaults (or ``base``); unknown classes raise."""
    w = dict(base or DEFAULT_WEIGHTS)
    if not text:
        return w
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise ValueError(f"--weights: expected CLASS=WEIGHT, got {part!r}")
        k, v = (s.strip() for s in part.split("=", 1))
        if k not in w:
            raise ValueError(f"--weights: unknown class {k!r}; classes: {', '.join(w)}")
        w[k] = float(v)
        if w[k] < 0:
            raise ValueError(f"--weights: {k} must be >= 0")
    if sum(w.values()) <= 0:
        raise ValueError("--weights: every class has weight 0")
    return w


# ---- operand register files ---------------------------------------------------------------

_INT_SRC_FP = {"fcvt.s.w", "fcvt.s.wu", "fcvt.s.l", "fcvt.s.lu", "fcvt.d.w", "fcvt.d.wu",
               "fcvt.d.l", "fcvt.d.lu", "fmv.w.x", "fmv.d.x"}
_INT_DST_FP = {"fcvt.w.s", "fcvt.wu.s", "fcvt.l.s", "fcvt.lu.s", "fcvt.w.d", "fcvt.wu.d",
               "fcvt.l.d", "fcvt.lu.d", "fmv.x.w", "fmv.x.d", "feq.s", "flt.s", "fle.s",
               "feq.d", "flt.d", "fle.d", "fclass.s", "fclass.d"}


def reg_files(base: str) -> dict[str, str]:
    """Which register file ('x' or 'f') each register operand of ``base`` names."""
    if base in ("flw", "fld"):
        return {"rd": "f", "rs1": "x"}
    if base in ("fsw", "fsd"):
        return {"rs1": "x", "rs2": "f"}
    if base.startswith("f") and base not in ("fence", "fence.i"):
        return {"rd": "x" if base in _INT_DST_FP else "f",
                "rs1": "x" if base in _INT_SRC_FP else "f", "rs2": "f", "rs3": "f"}
    return {"rd": "x", "rs1": "x", "rs2": "x", "rs3": "x"}


def _names(*names: str) -> list[Encoding]:
    return [BY_NAME[n] for n in names]


_S_D = lambda *ops: [f"{o}.{t}" for o in ops for t in ("s", "d")]  # noqa: E731

ALU = _names("lui", "auipc", "addi", "slti", "sltiu", "xori", "ori", "andi", "slli", "srli",
             "srai", "add", "sub", "sll", "slt", "sltu", "xor", "srl", "sra", "or", "and",
             "addiw", "slliw", "srliw", "sraiw", "addw", "subw", "sllw", "srlw", "sraw")
MUL = [e for e in BY_NAME.values() if e.ext == "rv64m"]
FP_ARITH = _names(*_S_D("fadd", "fsub", "fmul", "fdiv", "fsqrt", "fmin", "fmax", "fsgnj",
                        "fsgnjn", "fsgnjx", "fmadd", "fmsub", "fnmsub", "fnmadd", "feq",
                        "flt", "fle", "fclass"))
FP_CVT = _names("fcvt.w.s", "fcvt.wu.s", "fcvt.l.s", "fcvt.lu.s", "fcvt.s.w", "fcvt.s.wu",
                "fcvt.s.l", "fcvt.s.lu", "fcvt.w.d", "fcvt.wu.d", "fcvt.l.d", "fcvt.lu.d",
                "fcvt.d.w", "fcvt.d.wu", "fcvt.d.l", "fcvt.d.lu", "fcvt.s.d", "fcvt.d.s",
                "fmv.x.w", "fmv.w.x", "fmv.x.d", "fmv.d.x")
C_ALU = _names("c.addi4spn", "c.addi", "c.addiw", "c.li", "c.lui", "c.srli", "c.srai",
               "c.andi", "c.sub", "c.xor", "c.or", "c.and", "c.subw", "c.addw", "c.slli",
               "c.mv", "c.add")
AMO = [e for e in BY_NAME.values() if e.ext == "rv64a" and e.name.startswith("amo")]
ROUNDING = (0, 1, 2, 3, 4, 7, 7, 7)          # static modes and (often) dynamic
CSRS = (1, 2, 3)                              # fflags, frm, fcsr
_LOAD_SIZE = {"lb": 1, "lbu": 1, "lh": 2, "lhu": 2, "lw": 4, "lwu": 4, "ld": 8}
_STORE_SIZE = {"sb": 1, "sh": 2, "sw": 4, "sd": 8}
_C_MEM = {  # compressed memory forms: name -> (base, size, uses sp)
    "c.lw": ("lw", 4, False), "c.ld": ("ld", 8, False), "c.sw": ("sw", 4, False),
    "c.sd": ("sd", 8, False), "c.fld": ("fld", 8, False), "c.fsd": ("fsd", 8, False),
    "c.lwsp": ("lw", 4, True), "c.ldsp": ("ld", 8, True), "c.swsp": ("sw", 4, True),
    "c.sdsp": ("sd", 8, True), "c.fldsp": ("fld", 8, True), "c.fsdsp": ("fsd", 8, True)}
_C_BY_BASE: dict[str, list[str]] = {}
_C_IMM = {n: next(f for f in BY_NAME[n].operands if f.attrs == ("imm",)).values()
          for n in _C_MEM}
_TABLE_BYTES = b"".join(v.to_bytes(8, "little") for v in TABLE)
_FLD_SP = encode("fld", rd=0, rs1=2, imm=0)


def _addi(rd: int, rs1: int, imm: int) -> int:
    """addi, encoded directly (hot in the generator); imm must fit 12 bits signed."""
    assert -2048 <= imm < 2048
    return 0x13 | rd << 7 | rs1 << 15 | (imm & 0xFFF) << 20


_SP16 = [v for v in BY_NAME["c.addi16sp"].operands[0].values()
         if v and -v in BY_NAME["c.addi16sp"].operands[0].values()]
for _n, (_b, _s, _sp) in _C_MEM.items():
    _C_BY_BASE.setdefault(_b, []).append(_n)

# ---- illegal encodings, derived from the table ---------------------------------------------


def _reserved_compressed() -> list[int]:
    """Compressed words the table reserves: a ``nonzero`` field that is zero or a forbidden
    register value (each on a few random instances of the encoding), plus 0x0000."""
    r = random.Random(0)
    out = {0x0000}
    for e in BY_NAME.values():
        if e.length != 2:
            continue
        for _ in range(4):
            w = e.match
            for f in e.operands:
                vals = f.values()
                w |= f.insert(vals[r.randrange(len(vals))])
            for f in e.operands:
                if f.nonzero:
                    out.add(w & ~f.mask)
                for a, v in e.forbid.items():
                    if a in f.attrs:
                        out.add((w & ~f.mask) | f.insert(v))
    return sorted(w for w in out if decode(w).is_illegal)


RESERVED_C = _reserved_compressed()
#: privileged or unknown system instructions and CSRs a Linux process may not use
ILLEGAL_SYSTEM = (0x30200073, 0x10200073, 0x10500073, 0x12000073,    # mret sret wfi sfence.vma
                  0x30002573, 0x10002573, 0x18002573, 0x7C002573,    # csrr mstatus sstatus satp
                  0xC0029073, 0xC0109073, 0xC0205073)                # write cycle/time/instret


_PLANS: dict[str, tuple] = {}


def _fast_insert(f):
    """``f.insert`` without the range checks, for values drawn from ``f.values()``."""
    mask = (1 << f.width) - 1
    pl = tuple((lo, vlo, (1 << (hi - lo + 1)) - 1) for hi, lo, vlo in f.placements)
    bias = f.bias

    def ins(value: int) -> int:
        v = (value - bias) & mask
        w = 0
        for lo, vlo, m in pl:
            w |= ((v >> vlo) & m) << lo
        return w
    return ins


def _plan(e: Encoding) -> tuple:
    """Per operand of ``e``: (field, attrs, role, values, values that reserve it), where
    role is xd/xs/f (registers), rm, csr or imm."""
    p = _PLANS.get(e.name)
    if p is None:
        files = reg_files(e.base)
        out = []
        for f in e.operands:
            a = f.attrs[0]
            bad = {v for x in f.attrs for k, v in e.forbid.items() if k == x}
            if f.nonzero:
                bad.add(0)
            if a in ("rd", "rs1", "rs2", "rs3"):
                role = "f" if files.get(a) == "f" else ("xd" if "rd" in f.attrs else "xs")
            elif a in ("rm", "csr"):
                role = a
            else:
                role = "imm"
            out.append((f, f.attrs, role, f.values(), frozenset(bad), _fast_insert(f)))
        p = _PLANS[e.name] = tuple(out)
    return p


@dataclass
class Pointers:
    """Pointer registers of a case and their (fixed) values."""

    regs: dict[int, int]          # register -> address in the window
    creg: int                     # the one in x8..x15 (compressed forms)


class Generator:
    """Builds :class:`Case` objects; one instance per campaign (weights are parsed once)."""

    def __init__(self, weights: dict[str, float] | None = None, min_items: int = 6,
                 max_items: int = 24) -> None:
        self.weights = dict(weights or DEFAULT_WEIGHTS)
        self.classes = [k for k, v in self.weights.items() if v > 0]
        self.cum = []
        acc = 0.0
        for k in self.classes:
            acc += self.weights[k]
            self.cum.append(acc)
        self.total = acc
        self.min_items, self.max_items = min_items, max_items
        self.pools = Pools(DATA_SIZE)

    # ---- per case ------------------------------------------------------------------------
    def case(self, seed: int, index: int) -> Case:
        """Case ``index`` of campaign ``seed`` (deterministic)."""
        r = random.Random((seed << 32) ^ index)
        self.r = r
        others = [k for k in range(3, 32) if k not in range(8, 16) and k != 1]
        creg = r.randrange(8, 16)
        p3 = r.choice(others)
        self.ptr = Pointers({2: self._ptr_value(), creg: self._ptr_value(),
                             p3: self._ptr_value()}, creg)
        self.free_x = [k for k in range(1, 32) if k not in self.ptr.regs]
        self.hot_x = r.sample(self.free_x, 4)
        self.hot_f = r.sample(range(32), 4)
        n = r.randint(self.min_items, self.max_items)
        items: list[Item] = []
        rel: list[tuple[int, int]] = []          # (item index, relative target)
        while len(items) < n:
            cls = self._pick_class()
            made = getattr(self, "_gen_" + cls)()
            if isinstance(made, tuple):
                it, d = made
                rel.append((len(items), d))
            else:
                it = made
            it.cls = cls
            items.append(it)
        for k, d in rel:
            items[k].target = min(max(k + d, 0), len(items))
        pools = self.pools
        x = pools.regs(r, pools.x, random_x)
        x[0] = 0
        for k, v in self.ptr.regs.items():
            x[k] = v
        f = pools.regs(r, pools.f, random_f)
        frm = r.randrange(5) if r.random() < 0.96 else r.randrange(5, 8)
        fflags = 0 if r.random() < 0.5 else r.randrange(32)
        mem = pools.memory(r, DATA_SIZE)
        t = self.ptr.regs[2] - DATA_BASE
        mem[t:t + len(_TABLE_BYTES)] = _TABLE_BYTES
        res = (0, 0, 0)
        if r.random() < 0.1:
            a = r.choice(list(self.ptr.regs.values()))
            v = int.from_bytes(mem[a - DATA_BASE:a - DATA_BASE + 8], "little")
            res = (1, a, v if r.random() < 0.7 else r.getrandbits(64))
        c = Case(items, x, f, (frm << 5) | fflags, bytes(mem), res, 0, seed, index)
        c.budget = 3 * c.n_insns() + 16
        return c

    def _ptr_value(self) -> int:
        return DATA_BASE + self.r.randrange(0x800, DATA_SIZE - 0x900, 8)

    def _pick_class(self) -> str:
        k = bisect.bisect(self.cum, self.r.random() * self.total)
        return self.classes[min(k, len(self.classes) - 1)]

    # ---- operand choice ------------------------------------------------------------------
    def xd(self) -> int:
        """A destination x register (never a pointer; x0 sometimes)."""
        r = self.r.random()
        if r < 0.03:
            return 0
        if r < 0.5:
            return self.hot_x[int(r * 8) & 3 if len(self.hot_x) == 4 else 0]
        return self.free_x[int((r - 0.5) * 2 * len(self.free_x))]

    def xs(self) -> int:
        r = self.r.random()
        if r < 0.05:
            return 0
        if r < 0.5:
            return self.hot_x[int(r * 8) & 3 if len(self.hot_x) == 4 else 0]
        return 1 + int((r - 0.5) * 62)

    def fr(self) -> int:
        r = self.r.random()
        return self.hot_f[int(r * 8) & 3] if r < 0.6 else int((r - 0.6) * 80)

    def imm(self, f, vals: range | None = None) -> int:
        vals = vals or f.values()
        r = self.r.random()
        if r < 0.3:
            cands = [v for v in (vals[0], vals[-1], 0, vals.step, -vals.step, 1, -1)
                     if v in vals and not (f.nonzero and v == 0)]
            if cands:
                return self.r.choice(cands)
        while True:
            v = vals[self.r.randrange(len(vals))]
            if not (f.nonzero and v == 0):
                return v

    def fill(self, e: Encoding, **given: int) -> int:
        """A random instance of encoding ``e`` with operands ``given`` fixed. Destination
        registers avoid the pointer registers."""
        r = self.r
        word = e.match
        for f, attrs, role, vals, bad, ins in _plan(e):
            a = attrs[0]
            if a in given or (len(attrs) > 1 and attrs[1] in given):
                word |= f.insert(given[a] if a in given else given[attrs[1]])   # checked
                continue
            if role == "imm":
                v = self.imm(f, vals)
            elif role == "rm":
                v = ROUNDING[int(r.random() * len(ROUNDING))]
            elif role == "csr":
                v = CSRS[int(r.random() * 3)]
            else:
                v = self.fr() if role == "f" else self.xd() if role == "xd" else self.xs()
                if v not in vals or v in bad or (role == "xd" and v in self.ptr.regs):
                    ok = [c for c in vals if c not in bad and c not in self.ptr.regs]
                    v = ok[int(r.random() * len(ok))]
            word |= ins(v)
        return word

    # ---- memory addresses ----------------------------------------------------------------
    def _target_addr(self, size: int) -> int:
        """An address in the window: aligned, misaligned, or straddling a page boundary
        inside the window."""
        r = self.r.random()
        if r < 0.55:
            off = self.r.randrange(0, DATA_SIZE - 8, size)
        elif r < 0.8:
            off = self.r.randrange(0, DATA_SIZE - 8)
        else:
            page = self.r.randrange(1, DATA_SIZE // PAGE_SIZE) * PAGE_SIZE
            off = page - self.r.randint(1, max(1, size - 1)) if size > 1 else page - 1
        return DATA_BASE + off

    def _reach(self, addr: int) -> tuple[int, int] | None:
        """A pointer register and a 12-bit offset reaching ``addr``."""
        cands = [(p, addr - v) for p, v in self.ptr.regs.items() if -2048 <= addr - v < 2048]
        return self.r.choice(cands) if cands else None

    def _mem_op(self, name: str, size: int, data_file: str) -> Item:
        r = self.r
        cnames = _C_BY_BASE.get(name, [])
        if cnames and r.random() < 0.35:
            cn = cnames[int(r.random() * len(cnames))]
            _, _, uses_sp = _C_MEM[cn]
            e = BY_NAME[cn]
            preg = 2 if uses_sp else self.ptr.creg
            vals = _C_IMM[cn]
            room = DATA_BASE + DATA_SIZE - size - self.ptr.regs[preg]
            top = min(len(vals), room // vals.step + 1)
            given = {"imm": vals[int(r.random() * top)]}
            if not uses_sp:
                given["rs1"] = preg
            lo, hi = (1, 31) if uses_sp else (8, 15)
            if name in ("lw", "ld"):
                given["rd"] = r.choice([k for k in self.free_x if lo <= k <= hi])
            elif name == "fld":
                given["rd"] = r.randint(lo, hi)
            else:
                given["rs2"] = r.randint(0 if uses_sp else 8, hi)
            return Item([self.fill(e, **given)])
        addr = self._target_addr(size)
        preg, off = self._reach(addr) or (2, 0)
        return Item([self.fill(BY_NAME[name], rs1=preg, imm=off)])

    # ---- classes -------------------------------------------------------------------------
    def _gen_alu(self) -> Item:
        return Item([self.fill(self.r.choice(ALU))])

    def _gen_mul(self) -> Item:
        return Item([self.fill(self.r.choice(MUL))])

    def _gen_load(self) -> Item:
        n = self.r.choice(list(_LOAD_SIZE))
        return self._mem_op(n, _LOAD_SIZE[n], "x")

    def _gen_store(self) -> Item:
        n = self.r.choice(list(_STORE_SIZE))
        return self._mem_op(n, _STORE_SIZE[n], "x")

    def _gen_fload(self) -> Item:
        n = self.r.choice(("flw", "fld"))
        return self._mem_op(n, 4 if n == "flw" else 8, "f")

    def _gen_fstore(self) -> Item:
        n = self.r.choice(("fsw", "fsd"))
        return self._mem_op(n, 4 if n == "fsw" else 8, "f")

    def _temp(self) -> int:
        return self.r.choice(self.free_x)

    def _aligned_ptr(self, size: int, misaligned: bool = False) -> tuple[int, int]:
        """(pointer register, offset) for an atomic: the address is pointer + offset."""
        p, v = self.r.choice(list(self.ptr.regs.items()))
        lo = max(-2048, DATA_BASE - v)
        hi = min(2040, DATA_BASE + DATA_SIZE - 8 - v)
        off = self.r.randrange(lo - lo % 8 + 8, hi, 8)
        if misaligned:
            off += self.r.randrange(1, size)
        return p, off

    def _gen_amo(self, misaligned: bool = False) -> Item:
        e = self.r.choice(AMO)
        size = 8 if e.name.endswith(".d") else 4
        p, off = self._aligned_ptr(size, misaligned)
        t = self._temp()
        w = self.fill(e, rs1=t)
        return Item([_addi(t, p, off), w])

    def _gen_misaligned_atomic(self) -> Item:
        if self.r.random() < 0.6:
            return self._gen_amo(misaligned=True)
        size = self.r.choice((4, 8))
        p, off = self._aligned_ptr(size, misaligned=True)
        t = self._temp()
        return Item([_addi(t, p, off),
                     self.fill(BY_NAME["lr.d" if size == 8 else "lr.w"], rs1=t)])

    def _gen_sc_misaligned(self) -> Item:
        size = self.r.choice((4, 8))
        p, off = self._aligned_ptr(size, misaligned=True)
        t = self._temp()
        return Item([_addi(t, p, off),
                     self.fill(BY_NAME["sc.d" if size == 8 else "sc.w"], rs1=t)])

    def _gen_lrsc_mixed(self) -> Item:
        return self._gen_lrsc(mixed=True)

    def _gen_lrsc(self, mixed: bool = False) -> Item:
        r = self.r
        size = r.choice((4, 8))
        sfx = ".d" if size == 8 else ".w"
        p, off = self._aligned_ptr(size)
        t = self._temp()
        words = [_addi(t, p, off)]
        k = 1.0 if mixed else r.random()
        if k < 0.1:                                  # a lone SC (fails unless the initial
            words.append(self.fill(BY_NAME["sc" + sfx], rs1=t))    # reservation matches)
            return Item(words)
        if k < 0.2:                                  # a lone LR
            words.append(self.fill(BY_NAME["lr" + sfx], rs1=t))
            return Item(words)
        rd = self.xd()
        words.append(self.fill(BY_NAME["lr" + sfx], rs1=t, rd=rd if rd != t else 0))
        saved = self.free_x
        self.free_x = [x for x in saved if x != t]
        hot = self.hot_x
        self.hot_x = [x for x in hot if x != t] or self.free_x[:1]
        try:
            for _ in range(r.randint(0, 3)):
                q = r.random()
                if q < 0.15:                         # a store to the reserved address
                    words.append(encode("sw" if size == 4 else "sd", rs1=t, rs2=self.xs(),
                                        imm=0))
                elif q < 0.25:                       # a store elsewhere
                    n = r.choice(list(_STORE_SIZE))
                    words.append(self._mem_op(n, _STORE_SIZE[n], "x").words[0])
                else:
                    words.append(self.fill(r.choice(ALU)))
            sc_size = sfx if not mixed else (".w" if size == 8 else ".d")
            tt = t
            if r.random() < 0.1:                     # SC to another address
                p2, off2 = self._aligned_ptr(8)
                tt = self._temp()
                words.append(_addi(tt, p2, off2))
            words.append(self.fill(BY_NAME["sc" + sc_size], rs1=tt))
        finally:
            self.free_x, self.hot_x = saved, hot
        return Item(words)

    def _gen_fp_arith(self) -> Item:
        if self.r.random() < 0.35:
            return self._fp_special()
        return Item([self.fill(self.r.choice(FP_ARITH))])

    def _special_slot(self, single: bool) -> int:
        """A slot of the special-value table: mostly ±0, ±inf, qNaN, sNaN."""
        r = self.r
        if single and r.random() < 0.1:
            return len(TABLE_F64) + len(TABLE_F32) + int(r.random() * len(TABLE_UNBOXED))
        k = int(r.random() * 6) if r.random() < 0.75 else int(r.random() * len(TABLE_F64))
        return k + (len(TABLE_F64) if single else 0)

    def _fp_special(self) -> Item:
        """An operation whose operands are loaded from the special-value table at sp,
        sometimes after clearing fflags (so the flags it raises show)."""
        r = self.r
        e = r.choice(FP_ARITH)
        single = e.name.endswith(".s")
        n_src = sum(1 for f in e.operands if f.attrs[0] in ("rs1", "rs2", "rs3"))
        regs = r.sample(self.hot_f + [k for k in range(32) if k not in self.hot_f], n_src)
        words = []
        if r.random() < 0.35:
            words.append(encode("csrrwi", rd=0, imm=0, csr=1))
        for reg in regs:
            words.append(_FLD_SP | reg << 7 | (8 * self._special_slot(single)) << 20)
        words.append(self.fill(e, **dict(zip(("rs1", "rs2", "rs3"), regs))))
        return Item(words)

    def _gen_fp_cvt(self) -> Item:
        return Item([self.fill(self.r.choice(FP_CVT))])

    def _gen_csr(self) -> Item:
        n = self.r.choice(("csrrw", "csrrs", "csrrc", "csrrwi", "csrrsi", "csrrci"))
        given = {}
        if n.endswith("i") and self.r.random() < 0.5:
            given["imm"] = self.r.choice((0, 1, 2, 3, 4, 5, 7, 0x10, 0x1F))
        return Item([self.fill(BY_NAME[n], **given)])

    def _rel(self, max_back: int = 6, max_fwd: int = 8) -> int:
        if self.r.random() < 0.12:
            return -self.r.randint(0, max_back)
        return self.r.randint(1, max_fwd)

    def _gen_branch(self) -> tuple[Item, int]:
        r = self.r
        if r.random() < 0.25:
            e = BY_NAME[r.choice(("c.beqz", "c.bnez"))]
            w = self.fill(e, rs1=r.randrange(8, 16), imm=0)
            return Item([w], patch=0), self._rel(3, 4)
        e = BY_NAME[r.choice(("beq", "bne", "blt", "bge", "bltu", "bgeu"))]
        return Item([self.fill(e, imm=0)], patch=0), self._rel()

    def _gen_jump(self) -> tuple[Item, int]:
        r = self.r
        k = r.random()
        d = self._rel(3, 6)
        if k < 0.3:
            rd = r.choice((0, 1, self.xd()))
            if rd in self.ptr.regs:
                rd = 0
            return Item([encode("jal", rd=rd, imm=0)]), d
        if k < 0.5:
            return Item([encode("c.j", imm=0)]), d
        t = self._temp()
        if k < 0.8:
            rd = r.choice((0, 1, self.xd()))
            if rd in self.ptr.regs:
                rd = 0
            return Item([encode("auipc", rd=t, imm=0), encode("jalr", rd=rd, rs1=t, imm=0)],
                        patch=1), d
        cj = "c.jr" if r.random() < 0.5 or 1 in self.ptr.regs else "c.jalr"
        return Item([encode("auipc", rd=t, imm=0), encode("addi", rd=t, rs1=t, imm=0),
                     encode(cj, rs1=t)], patch=1), d

    def _gen_compressed(self) -> Item:
        r = self.r
        if r.random() < 0.08:           # sp moves and comes back (sp is a pointer)
            k = r.choice(_SP16)
            return Item([encode("c.addi16sp", imm=k), encode("c.addi16sp", imm=-k)])
        e = r.choice(C_ALU)
        for _ in range(20):
            try:
                w = self.fill(e)
            except ValueError:
                continue
            i = decode(w)
            if not i.is_illegal and i.rd not in self.ptr.regs:
                return Item([w])
        return Item([encode("c.li", rd=self.r.choice(self.free_x), imm=1)])

    def _gen_fence(self) -> Item:
        r = self.r
        k = r.random()
        if k < 0.4:
            return Item([encode("fence", fm=0, pred=r.randrange(16), succ=r.randrange(16),
                                rs1=0, rd=0)])
        if k < 0.55:
            return Item([encode("fence", fm=8, pred=3, succ=3, rs1=0, rd=0)])   # fence.tso
        if k < 0.7:
            return Item([self.fill(BY_NAME["fence"])])     # reserved fields set: a hint
        return Item([encode("fence.i", imm=0, rs1=0, rd=0)])

    def _gen_system(self) -> Item:
        return Item([self.r.choice((encode("ecall"), encode("ebreak"), encode("c.ebreak")))])

    def _gen_illegal(self) -> Item:
        r = self.r
        k = r.random()
        if k < 0.2:
            return Item([r.choice(RESERVED_C)])
        if k < 0.3:                       # an undefined 16-bit word
            for _ in range(500):
                w = r.getrandbits(16)
                if w & 3 != 3 and decode(w).is_illegal:
                    return Item([w])
        if k < 0.5:                       # static rounding mode 5 or 6
            e = r.choice([e for e in FP_ARITH + FP_CVT
                          if any(f.name == "rm" for f in e.operands)])
            return Item([self.fill(e, rm=r.choice((5, 6)))])
        if k < 0.65:
            return Item([r.choice(ILLEGAL_SYSTEM)])
        while True:                       # an undefined 32-bit word
            w = r.getrandbits(32) | 3
            if decode(w).is_illegal:
                return Item([w])

    def _gen_fault(self) -> Item:
        r = self.r
        k = r.random()
        load = r.choice(list(_LOAD_SIZE) + ["flw", "fld"])
        store = r.choice(list(_STORE_SIZE) + ["fsw", "fsd"])
        if k < 0.4:                       # near address 0 (or wrapped below it)
            n = load if r.random() < 0.5 else store
            return Item([self.fill(BY_NAME[n], rs1=0)])
        if k < 0.7:                       # a store into the (read-only) code
            t = self._temp()
            return Item([encode("auipc", rd=t, imm=0),
                         self.fill(BY_NAME[store], rs1=t, imm=r.randrange(-64, 64))])
        t = self._temp()                  # the unmapped page below the window
        n = load if r.random() < 0.5 else store
        return Item([encode("lui", rd=t, imm=(DATA_BASE - PAGE_SIZE)),
                     self.fill(BY_NAME[n], rs1=t, imm=r.randrange(0, 2040))])
