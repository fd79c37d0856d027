"""The LLVM lowering: the builder primitives emitted as LLVM IR text, one function per guest
block, many blocks per module.

What the emitter does itself, so that no optimisation pass is needed for decent code
(TCG's approach; ../shared/FACTS.md measured the gain):

* each guest register is loaded from the state once per block and kept as an SSA value;
  the registers an instruction writes are stored when the instruction completes, so the
  state in memory is always exactly the state before the current instruction and every
  exit — fault, syscall, interpreter fallback — is precise without extra work;
* constants are folded and trivial identities removed as the semantics are emitted;
* memory accesses get an inline TLB fast path; the slow path calls the support module.

Values are Python ints (constants) or SSA names (``%tN``); booleans are Python bools or
i1 SSA names. Block functions have the signature ``i64 (ptr %st)`` and return an EXIT_*
code; direct exits tail-call (``musttail``) through a patchable slot, indirect ones
through the jump cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dbtlab.ir.builder import (CANONICAL_NAN, CSR_CYCLE, CSR_FCSR, CSR_FFLAGS, CSR_FRM,
                               CSR_INSTRET, CSR_TIME, MASK64, RM_DYN, RM_RMM, Builder)
from dbtlab.ir.env import JC_BITS, JC_OFF, TLB_BITS, TLB_R_OFF, TLB_W_OFF
from dbtlab.ir.interp import InterpBuilder
from dbtlab.ir.state import (EXIT_BUDGET, EXIT_CHAIN, EXIT_EBREAK, EXIT_ECALL, EXIT_FAULT,
                             EXIT_FENCE_I, EXIT_ILLEGAL, EXIT_INTERP_ONE, EXIT_LOOKUP,
                             EXIT_SMC, FAULT_MISALIGNED, offset)
from dbtlab.translator.block import GuestBlock
from dbtlab.translator.insn import Insn

_FOLD = InterpBuilder(None)       # constant folding uses the interpreter's arithmetic
_ICMP = {"eq": "eq", "ne": "ne", "lt": "slt", "ltu": "ult", "ge": "sge", "geu": "uge"}
_BINOP = {"add": "add", "sub": "sub", "mul": "mul", "and": "and", "or": "or", "xor": "xor",
          "shl": "shl", "lshr": "lshr", "ashr": "ashr", "udiv": "udiv", "sdiv": "sdiv",
          "urem": "urem", "srem": "srem"}
_FTY = {32: "float", 64: "double"}
_ITY = {32: "i32", 64: "i64"}
_SFX = {32: "f32", 64: "f64"}
_FCMP = {"eq": "oeq", "lt": "olt", "le": "ole"}
_FROUND = {0: "roundeven", 1: "trunc", 2: "floor", 3: "ceil", 4: "round"}
_STRICT = 'metadata !"fpexcept.strict"'
_DYN = 'metadata !"round.dynamic"'

OFF_PC = offset("pc")
OFF_BUDGET = offset("budget")
OFF_EXIT_REQ = offset("exit_request")
OFF_AUX = offset("exit_aux")
OFF_ANCHOR = offset("instret_anchor")
OFF_FFLAGS = offset("fflags")
OFF_FRM = offset("frm")
OFF_FKIND = offset("fault_kind")
OFF_FADDR = offset("fault_addr")

SUPPORT_DECLS = {
    "dbt_ld": "declare { i64, i64 } @dbt_ld(ptr, i64, i64)",
    "dbt_st": "declare i64 @dbt_st(ptr, i64, i64, i64)",
    "dbt_cmpxchg": "declare { i64, i64 } @dbt_cmpxchg(ptr, i64, i64, i64, i64)",
    "dbt_get_fflags": "declare i64 @dbt_get_fflags(ptr)",
    "dbt_set_fflags": "declare void @dbt_set_fflags(ptr, i64)",
    "dbt_set_frm": "declare void @dbt_set_frm(ptr, i64)",
    "dbt_rm_push": "declare i32 @dbt_rm_push(i64)",
    "dbt_rm_pop": "declare void @dbt_rm_pop(i32)",
}


def lit(v: int) -> str:
    """An i64 literal (LLVM parses integers as signed)."""
    v &= MASK64
    return str(v - (1 << 64) if v >> 63 else v)


def needs_interpreter(insn: Insn) -> bool:
    """Instructions the JIT hands to the interpreter: a static round-to-nearest-max-magnitude
    mode, which x86 cannot do in hardware (rare: compilers emit dynamic modes)."""
    enc = insn.enc
    return (enc is not None and insn.rm == RM_RMM and insn.name not in _RMM_NATIVE
            and any(f.name == "rm" for f in enc.operands))


#: conversions to integer round with llvm.round (ties away) natively
_RMM_NATIVE = frozenset({"fcvt.w.s", "fcvt.wu.s", "fcvt.l.s", "fcvt.lu.s", "fcvt.w.d",
                         "fcvt.wu.d", "fcvt.l.d", "fcvt.lu.d", "fcvt.d.s", "fcvt.d.w",
                         "fcvt.d.wu"})


@dataclass
class Slot:
    """A direct exit: a patchable function pointer, initially a stub returning EXIT_CHAIN."""

    id: int
    target: int
    table_index: int      # index of the slot global in the module table (stub is +1)


@dataclass
class BlockCode:
    """What the emitter produced for one guest block."""

    name: str
    block: GuestBlock
    table_index: int
    slots: list[Slot] = field(default_factory=list)
    successors: list[int] = field(default_factory=list)   # static direct targets
    ir_lines: int = 0


class ModuleEmitter:
    """Collects blocks of one translation batch into one module."""

    def __init__(self, name: str, chaining: bool, slot_ids, profile: bool = False) -> None:
        self.name = name
        self.chaining = chaining
        self.profile = profile
        self._slot_ids = slot_ids          # iterator of fresh global slot ids
        self.decls: set[str] = set()
        self.globals: list[str] = []
        self.functions: list[str] = []
        self.table: list[str] = []
        self.blocks: list[BlockCode] = []

    def add_table(self, entry: str) -> int:
        self.table.append(entry)
        return len(self.table) - 1

    def emit_block(self, blk: GuestBlock) -> BlockCode:
        """Emit one block; truncates blk.insns at the first instruction that ends it."""
        fname = f"b{blk.pc:x}" + (f"_n{blk.limit}" if blk.limit else "") + f"_{self.name}"
        b = LLVMBuilder(self, fname)
        code = BlockCode(fname, blk, self.add_table(f"ptr @{fname}"))
        b.code = code
        kept = []
        for k, (pc, insn) in enumerate(blk.insns):
            kept.append((pc, insn))
            b.emit_insn(k, pc, insn)
            if b.terminated:
                break
        blk.insns = kept
        if not b.terminated:
            b.direct_exit(blk.end)
        self.functions.append(b.finish(len(kept)))
        code.ir_lines = len(b.lines)
        self.blocks.append(code)
        return code

    def new_slot(self, target: int) -> Slot:
        sid = next(self._slot_ids)
        s, stub = f"s{sid}_{self.name}", f"z{sid}_{self.name}"
        self.globals.append(f"@{s} = internal global ptr @{stub}")
        self.functions.append(
            f"define internal i64 @{stub}(ptr %st) {{\n"
            f"  %p = getelementptr i8, ptr %st, i64 {OFF_PC}\n"
            f"  store i64 {lit(target)}, ptr %p\n"
            f"  %a = getelementptr i8, ptr %st, i64 {OFF_AUX}\n"
            f"  store i64 {sid}, ptr %a\n"
            f"  ret i64 {EXIT_CHAIN}\n}}")
        idx = self.add_table(f"ptr @{s}")
        self.add_table(f"ptr @{stub}")
        return Slot(sid, target, idx)

    def text(self) -> str:
        out = [f"; dbtlab translation module {self.name}"]
        out += sorted(self.decls)
        out += self.globals
        out += self.functions
        out.append(f"@tbl_{self.name} = global [{len(self.table)} x ptr] "
                   f"[{', '.join(self.table)}]")
        out.append('attributes #0 = { nounwind strictfp "frame-pointer"="none" }')
        out.append("attributes #1 = { strictfp }")
        return "\n".join(out) + "\n"


class LLVMBuilder(Builder):
    """Emits one block function. See the module docstring for the conventions."""

    def __init__(self, mod: ModuleEmitter, fname: str) -> None:
        self.mod = mod
        self.fname = fname
        self.lines: list[str] = []
        self.n = 0
        self.code: BlockCode | None = None
        self.cache: dict[tuple, str] = {}      # committed register values
        self.pending: dict[tuple, object] = {}  # this instruction's writes
        self.ptrs: dict[int, str] = {}         # state offset -> pointer SSA name
        self.exits: dict[tuple, str] = {}      # (k, reason) -> exit label
        self.exit_bodies: list[str] = []
        self.terminated = False
        self.frm_checked = False
        self.k = 0
        self.insn: Insn | None = None
        self.pc = self.next_pc = 0

    # ---- text helpers ----------------------------------------------------------------
    def _v(self) -> str:
        self.n += 1
        return f"%t{self.n}"

    def _label(self) -> str:
        self.n += 1
        return f"L{self.n}"

    def e(self, line: str) -> None:
        self.lines.append("  " + line)

    def put_label(self, lab: str) -> None:
        self.lines.append(f"{lab}:")

    @staticmethod
    def a(x) -> str:
        if isinstance(x, bool):
            return "true" if x else "false"
        if isinstance(x, int):
            return lit(x)
        return x

    def ptr(self, off: int) -> str:
        p = self.ptrs.get(off)
        if p is None:
            p = self.ptrs[off] = f"%p{off}"
        return p

    def decl(self, name: str) -> None:
        self.mod.decls.add(SUPPORT_DECLS[name])

    def intrinsic(self, text: str) -> None:
        self.mod.decls.add(text)

    # ---- block structure -------------------------------------------------------------
    def emit_insn(self, k: int, pc: int, insn: Insn) -> None:
        self.k, self.pc, self.insn = k, pc, insn
        self.next_pc = (pc + insn.length) & MASK64
        self.pending = {}
        if self.mod.profile:
            self._count_insn()
        if needs_interpreter(insn):
            self.e(f"br label %{self.exit_label(k, EXIT_INTERP_ONE)}")
            self.terminated = True
            return
        insn.sem(self, insn)
        if not self.terminated:
            self.commit()

    def _count_insn(self) -> None:
        """Profiling hook (block execution counters are added by the profiler)."""

    def commit(self) -> None:
        """Store this instruction's register writes; they become the block's values."""
        for key, v in self.pending.items():
            off = self._key_offset(key)
            self.e(f"store i64 {self.a(v)}, ptr {self.ptr(off)}")
            self.cache[key] = v
        self.pending = {}

    @staticmethod
    def _key_offset(key: tuple) -> int:
        kind, idx = key
        if kind == "x":
            return offset("x", idx)
        if kind == "f":
            return offset("f", idx)
        return offset(idx)

    def exit_label(self, k: int, reason: int, pc: int | None = None) -> str:
        """A label that leaves the block before instruction k (or, for EXIT_FENCE_I, after
        it, at pc) with ``reason``: state.pc set, the budget given back for the
        instructions that did not run."""
        key = (k, reason)
        lab = self.exits.get(key)
        if lab is None:
            lab = self.exits[key] = f"X{k}_{reason}"
            pc = self.pc if pc is None else pc
            body = [f"{lab}:",
                    f"  store i64 {lit(pc)}, ptr {self.ptr(OFF_PC)}"]
            if reason == EXIT_ILLEGAL:
                body.append(f"  store i64 {self.insn.word}, ptr {self.ptr(OFF_AUX)}")
            ran = k + 1 if reason == EXIT_FENCE_I else k
            # the budget after the exit: entry budget minus the instructions that ran
            body += [f"  %bud_{lab} = sub i64 %bud, {ran}",
                     f"  store i64 %bud_{lab}, ptr {self.ptr(OFF_BUDGET)}",
                     f"  ret i64 {reason}"]
            self.exit_bodies.append("\n".join(body))
        return lab

    def finish(self, ninsns: int) -> str:
        head = [f"define internal i64 @{self.fname}(ptr %st) #0 {{", "entry:"]
        for off, name in sorted(self.ptrs.items()):
            head.append(f"  {name} = getelementptr i8, ptr %st, i64 {off}")
        for off in (OFF_BUDGET, OFF_EXIT_REQ, OFF_PC):
            if off not in self.ptrs:
                head.append(f"  %p{off} = getelementptr i8, ptr %st, i64 {off}")
        head += [f"  %bud = load i64, ptr %p{OFF_BUDGET}",
                 f"  %req = load i64, ptr %p{OFF_EXIT_REQ}",
                 f"  %enough = icmp uge i64 %bud, {ninsns}",
                 "  %noreq = icmp eq i64 %req, 0",
                 "  %go = and i1 %enough, %noreq",
                 "  br i1 %go, label %body, label %nobudget",
                 "nobudget:",
                 f"  store i64 {lit(self.code.block.pc)}, ptr %p{OFF_PC}",
                 f"  ret i64 {EXIT_BUDGET}",
                 "body:",
                 f"  %left = sub i64 %bud, {ninsns}",
                 f"  store i64 %left, ptr %p{OFF_BUDGET}"]
        return "\n".join(head + self.lines + self.exit_bodies) + "\n}"

    # ---- exits -----------------------------------------------------------------------
    def direct_exit(self, target: int) -> None:
        target &= MASK64
        if self.code is not None:
            self.code.successors.append(target)
        if not self.mod.chaining or self.code.block.limit:
            self.e(f"store i64 {lit(target)}, ptr {self.ptr(OFF_PC)}")
            self.e(f"ret i64 {EXIT_LOOKUP}")
            return
        slot = self.mod.new_slot(target)
        self.code.slots.append(slot)
        f = self._v()
        r = self._v()
        self.e(f"{f} = load ptr, ptr @s{slot.id}_{self.mod.name}")
        self.e(f"{r} = musttail call i64 {f}(ptr %st)")
        self.e(f"ret i64 {r}")

    def indirect_exit(self, target: str) -> None:
        self.e(f"store i64 {target}, ptr {self.ptr(OFF_PC)}")
        if self.code.block.limit:
            self.e(f"ret i64 {EXIT_LOOKUP}")
            return
        h, idx, eo, o, ep, epc, hit = (self._v() for _ in range(7))
        lh, lm = self._label(), self._label()
        self.e(f"{h} = lshr i64 {target}, 1")
        self.e(f"{idx} = and i64 {h}, {(1 << JC_BITS) - 1}")
        self.e(f"{eo} = shl i64 {idx}, 4")
        self.e(f"{o} = add i64 {eo}, {JC_OFF}")
        self.e(f"{ep} = getelementptr i8, ptr %st, i64 {o}")
        self.e(f"{epc} = load i64, ptr {ep}")
        self.e(f"{hit} = icmp eq i64 {epc}, {target}")
        self.e(f"br i1 {hit}, label %{lh}, label %{lm}")
        self.put_label(lh)
        fp, fn, r = self._v(), self._v(), self._v()
        self.e(f"{fp} = getelementptr i8, ptr {ep}, i64 8")
        self.e(f"{fn} = load ptr, ptr {fp}")
        self.e(f"{r} = musttail call i64 {fn}(ptr %st)")
        self.e(f"ret i64 {r}")
        self.put_label(lm)
        self.e(f"ret i64 {EXIT_LOOKUP}")

    # ---- integer primitives ----------------------------------------------------------
    def const(self, v):
        return v & MASK64

    def binop(self, op, x, y):
        xi, yi = isinstance(x, int), isinstance(y, int)
        if xi and yi:
            return _FOLD.binop(op, x, y)
        if yi:
            if y == 0 and op in ("add", "sub", "or", "xor", "shl", "lshr", "ashr"):
                return x
            if (y == MASK64 and op == "and") or (y == 1 and op in ("mul", "udiv", "sdiv")):
                return x
            if y == 0 and op in ("and", "mul"):
                return 0
        if xi and x == 0 and op in ("add", "or", "xor"):
            return y
        r = self._v()
        if op in ("shl", "lshr", "ashr"):
            if yi:
                y &= 63
            else:
                m = self._v()
                self.e(f"{m} = and i64 {y}, 63")
                y = m
            self.e(f"{r} = {op} i64 {self.a(x)}, {self.a(y)}")
            return r
        if op in ("mulh", "mulhu", "mulhsu"):
            ex = "zext" if op == "mulhu" else "sext"
            ey = "sext" if op == "mulh" else "zext"
            wx, wy, p, s = (self._v() for _ in range(4))
            self.e(f"{wx} = {ex} i64 {self.a(x)} to i128")
            self.e(f"{wy} = {ey} i64 {self.a(y)} to i128")
            self.e(f"{p} = mul i128 {wx}, {wy}")
            self.e(f"{s} = lshr i128 {p}, 64")
            self.e(f"{r} = trunc i128 {s} to i64")
            return r
        self.e(f"{r} = {_BINOP[op]} i64 {self.a(x)}, {self.a(y)}")
        return r

    def icmp(self, pred, x, y):
        if isinstance(x, int) and isinstance(y, int):
            return _FOLD.icmp(pred, x, y)
        r = self._v()
        self.e(f"{r} = icmp {_ICMP[pred]} i64 {self.a(x)}, {self.a(y)}")
        return r

    def select(self, c, x, y):
        if isinstance(c, bool):
            return x if c else y
        if x == y:
            return x
        r = self._v()
        self.e(f"{r} = select i1 {c}, i64 {self.a(x)}, i64 {self.a(y)}")
        return r

    def sext(self, x, bits):
        if isinstance(x, int):
            return _FOLD.sext(x, bits)
        if bits == 64:
            return x
        t, r = self._v(), self._v()
        self.e(f"{t} = trunc i64 {x} to i{bits}")
        self.e(f"{r} = sext i{bits} {t} to i64")
        return r

    def zext(self, x, bits):
        if isinstance(x, int):
            return _FOLD.zext(x, bits)
        if bits == 64:
            return x
        r = self._v()
        self.e(f"{r} = and i64 {x}, {lit((1 << bits) - 1)}")
        return r

    def bool_to_int(self, c):
        if isinstance(c, bool):
            return int(c)
        r = self._v()
        self.e(f"{r} = zext i1 {c} to i64")
        return r

    def bop(self, op, c, d=None):
        if op == "not":
            if isinstance(c, bool):
                return not c
            r = self._v()
            self.e(f"{r} = xor i1 {c}, true")
            return r
        if isinstance(c, bool) or isinstance(d, bool):
            if not isinstance(c, bool):
                c, d = d, c
            if op == "and":
                return d if c else False
            return True if c else d
        r = self._v()
        self.e(f"{r} = {op} i1 {c}, {d}")
        return r

    # ---- state -----------------------------------------------------------------------
    def _read(self, key: tuple):
        v = self.pending.get(key)
        if v is not None:
            return v
        v = self.cache.get(key)
        if v is not None:
            return v
        r = self._v()
        self.e(f"{r} = load i64, ptr {self.ptr(self._key_offset(key))}")
        self.cache[key] = r
        return r

    def _read_x(self, r):
        return self._read(("x", r))

    def _write_x(self, r, v):
        self.pending[("x", r)] = v

    def read_f(self, r):
        return self._read(("f", r))

    def write_f(self, r, v):
        self.pending[("f", r)] = v

    def read_field(self, name):
        return self._read(("s", name))

    def write_field(self, name, v):
        self.pending[("s", name)] = v

    def read_csr(self, csr):
        if csr == CSR_FFLAGS:
            return self._call_fflags()
        if csr == CSR_FRM:
            r = self._v()
            self.e(f"{r} = load i64, ptr {self.ptr(OFF_FRM)}")
            return r
        if csr == CSR_FCSR:
            fl = self._call_fflags()
            frm = self.read_csr(CSR_FRM)
            return self.or_(self.shl(frm, 5), fl)
        if csr in (CSR_CYCLE, CSR_TIME, CSR_INSTRET):
            a, d, r = self._v(), self._v(), self._v()
            self.e(f"{a} = load i64, ptr {self.ptr(OFF_ANCHOR)}")
            self.e(f"{d} = sub i64 {a}, %bud")
            self.e(f"{r} = add i64 {d}, {self.k}")
            return r
        raise ValueError(f"unsupported CSR {csr:#x}")

    def _call_fflags(self):
        self.decl("dbt_get_fflags")
        r = self._v()
        self.e(f"{r} = call i64 @dbt_get_fflags(ptr %st)")
        return r

    def write_csr(self, csr, v):
        if csr in (CSR_FFLAGS, CSR_FCSR):
            self.decl("dbt_set_fflags")
            self.e(f"call void @dbt_set_fflags(ptr %st, i64 {self.a(v)})")
        if csr in (CSR_FRM, CSR_FCSR):
            self.decl("dbt_set_frm")
            frm = v if csr == CSR_FRM else self.lshr(v, 5)
            self.e(f"call void @dbt_set_frm(ptr %st, i64 {self.a(frm)})")
            self.frm_checked = False

    # ---- memory ----------------------------------------------------------------------
    def _tlb(self, addr, size: int, tlb_off: int):
        """Emit the TLB probe; returns (hit i1, entry pointer)."""
        pn, idx, eo, o, ep, tag, m, hit = (self._v() for _ in range(8))
        a = self.a(addr)
        self.e(f"{pn} = lshr i64 {a}, 12")
        self.e(f"{idx} = and i64 {pn}, {(1 << TLB_BITS) - 1}")
        self.e(f"{eo} = shl i64 {idx}, 4")
        self.e(f"{o} = add i64 {eo}, {tlb_off}")
        self.e(f"{ep} = getelementptr i8, ptr %st, i64 {o}")
        self.e(f"{tag} = load i64, ptr {ep}")
        self.e(f"{m} = and i64 {a}, {lit(~0xFFF | (size - 1))}")
        self.e(f"{hit} = icmp eq i64 {m}, {tag}")
        return hit, ep

    def _host(self, addr, ep):
        ap, add, h, hp = (self._v() for _ in range(4))
        self.e(f"{ap} = getelementptr i8, ptr {ep}, i64 8")
        self.e(f"{add} = load i64, ptr {ap}")
        self.e(f"{h} = add i64 {self.a(addr)}, {add}")
        self.e(f"{hp} = inttoptr i64 {h} to ptr")
        return hp

    def load(self, addr, size, signed):
        hit, ep = self._tlb(addr, size, TLB_R_OFF)
        lh, ls, lj = self._label(), self._label(), self._label()
        self.e(f"br i1 {hit}, label %{lh}, label %{ls}")
        self.put_label(lh)
        hp = self._host(addr, ep)
        raw, fast = self._v(), self._v()
        ity = f"i{8 * size}"
        self.e(f"{raw} = load {ity}, ptr {hp}, align 1")
        if size == 8:
            fast = raw
        else:
            self.e(f"{fast} = {'sext' if signed else 'zext'} {ity} {raw} to i64")
        self.e(f"br label %{lj}")
        self.put_label(ls)
        self.decl("dbt_ld")
        res, v, st, bad = self._v(), self._v(), self._v(), self._v()
        self.e(f"{res} = call {{ i64, i64 }} @dbt_ld(ptr %st, i64 {self.a(addr)}, i64 {size})")
        self.e(f"{v} = extractvalue {{ i64, i64 }} {res}, 0")
        self.e(f"{st} = extractvalue {{ i64, i64 }} {res}, 1")
        self.e(f"{bad} = icmp ne i64 {st}, 0")
        lok = self._label()
        self.e(f"br i1 {bad}, label %{self.exit_label(self.k, EXIT_FAULT)}, label %{lok}")
        self.put_label(lok)
        slow = self.sext(v, 8 * size) if signed else v
        self.e(f"br label %{lj}")
        self.put_label(lj)
        r = self._v()
        self.e(f"{r} = phi i64 [ {fast}, %{lh} ], [ {self.a(slow)}, %{lok} ]")
        return r

    def store(self, addr, v, size):
        hit, ep = self._tlb(addr, size, TLB_W_OFF)
        lh, ls, lj = self._label(), self._label(), self._label()
        self.e(f"br i1 {hit}, label %{lh}, label %{ls}")
        self.put_label(lh)
        hp = self._host(addr, ep)
        val = self.a(v)
        if size < 8:
            t = self._v()
            self.e(f"{t} = trunc i64 {val} to i{8 * size}")
            val = t
        self.e(f"store i{8 * size} {val}, ptr {hp}, align 1")
        self.e(f"br label %{lj}")
        self.put_label(ls)
        self._slow_store_status(f"call i64 @dbt_st(ptr %st, i64 {self.a(addr)}, "
                                f"i64 {self.a(v)}, i64 {size})", lj)
        self.put_label(lj)

    def _slow_store_status(self, call: str, join: str) -> None:
        self.decl("dbt_st")
        st, ok, lnz = self._v(), self._v(), self._label()
        self.e(f"{st} = {call}")
        self.e(f"{ok} = icmp eq i64 {st}, 0")
        self.e(f"br i1 {ok}, label %{join}, label %{lnz}")
        self.put_label(lnz)
        self._status_exit(st)

    def _status_exit(self, st: str) -> None:
        """status 1 -> fault exit, 2 -> self-modifying-code exit (both before this insn)."""
        isf = self._v()
        self.e(f"{isf} = icmp eq i64 {st}, 1")
        self.e(f"br i1 {isf}, label %{self.exit_label(self.k, EXIT_FAULT)}, "
               f"label %{self.exit_label(self.k, EXIT_SMC)}")

    def cmpxchg(self, cond, addr, expected, new, size):
        if cond is False:
            return False
        self.decl("dbt_cmpxchg")
        lx, lj, lok = self._label(), self._label(), self._label()
        entry = self._label()
        self.e(f"br label %{entry}")
        self.put_label(entry)
        if cond is True:
            self.e(f"br label %{lx}")
        else:
            self.e(f"br i1 {cond}, label %{lx}, label %{lj}")
        self.put_label(lx)
        skipped = "" if cond is True else f", [ 0, %{entry} ]"
        res, ok, st, good = self._v(), self._v(), self._v(), self._v()
        self.e(f"{res} = call {{ i64, i64 }} @dbt_cmpxchg(ptr %st, i64 {self.a(addr)}, "
               f"i64 {self.a(expected)}, i64 {self.a(new)}, i64 {size})")
        self.e(f"{ok} = extractvalue {{ i64, i64 }} {res}, 0")
        self.e(f"{st} = extractvalue {{ i64, i64 }} {res}, 1")
        self.e(f"{good} = icmp eq i64 {st}, 0")
        lbad = self._label()
        self.e(f"br i1 {good}, label %{lok}, label %{lbad}")
        self.put_label(lbad)
        self._status_exit(st)
        self.put_label(lok)
        self.e(f"br label %{lj}")
        self.put_label(lj)
        r, b = self._v(), self._v()
        self.e(f"{r} = phi i64 [ {ok}, %{lok} ]{skipped}")
        self.e(f"{b} = icmp ne i64 {r}, 0")
        return b

    def check_aligned(self, addr, size):
        if isinstance(addr, int):
            if addr & (size - 1):
                self._fault_now(FAULT_MISALIGNED, addr)
            return
        m, bad, lbad, lok = self._v(), self._v(), self._label(), self._label()
        self.e(f"{m} = and i64 {addr}, {size - 1}")
        self.e(f"{bad} = icmp ne i64 {m}, 0")
        self.e(f"br i1 {bad}, label %{lbad}, label %{lok}")
        self.put_label(lbad)
        self._fault_now(FAULT_MISALIGNED, addr)
        self.put_label(lok)

    def _fault_now(self, kind: int, addr) -> None:
        self.e(f"store i64 {kind}, ptr {self.ptr(OFF_FKIND)}")
        self.e(f"store i64 {self.a(addr)}, ptr {self.ptr(OFF_FADDR)}")
        self.e(f"br label %{self.exit_label(self.k, EXIT_FAULT)}")

    # ---- control ---------------------------------------------------------------------
    def jump(self, target):
        self.commit()
        self.terminated = True
        if isinstance(target, int):
            self.direct_exit(target)
        else:
            self.indirect_exit(target)

    def branch(self, cond, target):
        self.commit()
        self.terminated = True
        if isinstance(cond, bool):
            self.direct_exit(target if cond else self.next_pc)
            return
        lt, lf = self._label(), self._label()
        self.e(f"br i1 {cond}, label %{lt}, label %{lf}")
        self.put_label(lt)
        self.direct_exit(target)
        self.put_label(lf)
        self.direct_exit(self.next_pc)

    def trap(self, kind):
        self.terminated = True
        if kind == "fence.i":
            self.commit()
            lab = self.exit_label(self.k, EXIT_FENCE_I, pc=self.next_pc)
        else:
            self.pending = {}
            reason = {"ecall": EXIT_ECALL, "ebreak": EXIT_EBREAK, "illegal": EXIT_ILLEGAL}[kind]
            lab = self.exit_label(self.k, reason)
        self.e(f"br label %{lab}")

    # ---- floating point --------------------------------------------------------------
    def _check_frm(self) -> None:
        """Dynamic rounding: the JIT runs only RNE/RTZ/RDN/RUP natively; RMM and the
        invalid modes go to the interpreter (which computes RMM, or raises SIGILL)."""
        if self.frm_checked:
            return
        f, ok, lok = self._v(), self._v(), self._label()
        self.e(f"{f} = load i64, ptr {self.ptr(OFF_FRM)}")
        self.e(f"{ok} = icmp ult i64 {f}, 4")
        self.e(f"br i1 {ok}, label %{lok}, label %{self.exit_label(self.k, EXIT_INTERP_ONE)}")
        self.put_label(lok)
        self.frm_checked = True

    def _to_fp(self, x, fmt: int) -> str:
        if fmt == 64:
            r = self._v()
            self.e(f"{r} = bitcast i64 {self.a(x)} to double")
            return r
        t, r = self._v(), self._v()
        self.e(f"{t} = trunc i64 {self.a(x)} to i32")
        self.e(f"{r} = bitcast i32 {t} to float")
        return r

    def _from_fp(self, v: str, fmt: int, canon: bool = True):
        if fmt == 64:
            r = self._v()
            self.e(f"{r} = bitcast double {v} to i64")
        else:
            t, r = self._v(), self._v()
            self.e(f"{t} = bitcast float {v} to i32")
            self.e(f"{r} = zext i32 {t} to i64")
        if not canon:
            return r
        return self.select(self.f_is_nan(r, fmt), self.const(CANONICAL_NAN[fmt]), r)

    def _rounding(self, rm: int):
        """Returns the rounding metadata and a token for _end_rounding."""
        if rm == RM_DYN:
            self._check_frm()
            return None
        self.decl("dbt_rm_push")
        saved = self._v()
        self.e(f"{saved} = call i32 @dbt_rm_push(i64 {rm})")
        return saved

    def _end_rounding(self, saved) -> None:
        if saved is not None:
            self.decl("dbt_rm_pop")
            self.e(f"call void @dbt_rm_pop(i32 {saved})")

    def _constrained(self, op: str, sig: str, ret: str, args: list[str], rounding: bool):
        md = ([_DYN] if rounding else []) + [_STRICT]
        self.intrinsic(f"declare {ret} @llvm.experimental.constrained.{op}.{sig}("
                       + ", ".join([a.split()[0] for a in args] + ["metadata"] * len(md)) + ")")
        r = self._v()
        self.e(f"{r} = call {ret} @llvm.experimental.constrained.{op}.{sig}("
               + ", ".join(args + md) + ") #1")
        return r

    def fop(self, op, fmt, args, rm):
        ty = _FTY[fmt]
        vals = [f"{ty} {self._to_fp(x, fmt)}" for x in args]
        saved = self._rounding(rm)
        name = {"add": "fadd", "sub": "fsub", "mul": "fmul", "div": "fdiv",
                "sqrt": "sqrt", "fma": "fma"}[op]
        r = self._constrained(name, _SFX[fmt], ty, vals, True)
        self._end_rounding(saved)
        return self._from_fp(r, fmt)

    def fcvt_ff(self, x, src, dst, rm):
        v = f"{_FTY[src]} {self._to_fp(x, src)}"
        if dst < src:
            saved = self._rounding(rm)
            r = self._constrained("fptrunc", f"{_SFX[dst]}.{_SFX[src]}", _FTY[dst], [v], True)
            self._end_rounding(saved)
        else:   # exact, but a dynamic rm must still be valid (as in Spike and QEMU)
            if rm == RM_DYN:
                self._check_frm()
            r = self._constrained("fpext", f"{_SFX[dst]}.{_SFX[src]}", _FTY[dst], [v], False)
        return self._from_fp(r, dst)

    def fcvt_if(self, x, signed, fmt, rm):
        saved = self._rounding(rm)
        op = "sitofp" if signed else "uitofp"
        r = self._constrained(op, f"{_SFX[fmt]}.i64", _FTY[fmt], [f"i64 {self.a(x)}"], True)
        self._end_rounding(saved)
        return self._from_fp(r, fmt, canon=False)

    def fround(self, x, fmt, rm):
        v = [f"{_FTY[fmt]} {self._to_fp(x, fmt)}"]
        if rm == RM_DYN:
            self._check_frm()
            r = self._constrained("nearbyint", _SFX[fmt], _FTY[fmt], v, True)
        else:
            r = self._constrained(_FROUND[rm], _SFX[fmt], _FTY[fmt], v, False)
        return self._from_fp(r, fmt)

    def ftoi(self, x, fmt, signed):
        op = "fptosi" if signed else "fptoui"
        return self._constrained(op, f"i64.{_SFX[fmt]}", "i64",
                                 [f"{_FTY[fmt]} {self._to_fp(x, fmt)}"], False)

    def fcmp(self, pred, x, y, fmt, signaling):
        op = "fcmps" if signaling else "fcmp"
        ty = _FTY[fmt]
        args = [f"{ty} {self._to_fp(x, fmt)}", f"{ty} {self._to_fp(y, fmt)}"]
        self.intrinsic(f"declare i1 @llvm.experimental.constrained.{op}.{_SFX[fmt]}"
                       f"({ty}, {ty}, metadata, metadata)")
        r = self._v()
        self.e(f"{r} = call i1 @llvm.experimental.constrained.{op}.{_SFX[fmt]}"
               f"({', '.join(args)}, metadata !\"{_FCMP[pred]}\", {_STRICT}) #1")
        return r

    def fflags_or(self, flags):
        if isinstance(flags, int) and flags == 0:
            return
        old, new = self._v(), self._v()
        p = self.ptr(OFF_FFLAGS)
        self.e(f"{old} = load i64, ptr {p}")
        self.e(f"{new} = or i64 {old}, {self.a(flags)}")
        self.e(f"store i64 {new}, ptr {p}")

