"""The LLVM lowering: the builder primitives emitted as LLVM IR text, one function per guest
block, many blocks per module.

What the emitter does itself, so that no optimisation pass is needed for decent code
(TCG's approach):

* each guest register is loaded from the state once per block and kept as an SSA value;
  the registers an instruction writes are stored when the instruction completes, so the
  state in memory is always exactly the state before the current instruction and every
  exit — syscall, interpreter fallback, host fault — is precise without extra work;
* constants are folded and trivial identities removed as the semantics are emitted;
* guest memory is reached at ``guest_base + address`` (addresses beyond the guest address
  space are clamped into the guard area) with no software check: the host MMU enforces
  the guest's permissions and a fault comes back as EXIT_HOSTFAULT (``ir/hostfault.py``).
  Before an instruction first touches memory, its guest pc is stored, so the runtime
  knows which instruction faulted.

Every way out of a block is a tail call through one ``musttail`` site at the end of the
function: to the next block through a chain slot or the jump cache, or to the support
module's stub for an exit code. (LLVM's fast instruction selector cannot lower tail calls;
with a single site, only one small basic block per function needs the slow selector.)

Values are Python ints (constants) or SSA names (``%tN``); booleans are Python bools or
i1 SSA names. Block functions have the signature ``i64 (ptr %st)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dbtlab.ir.builder import (CANONICAL_NAN, CSR_CYCLE, CSR_FCSR, CSR_FFLAGS, CSR_FRM,
                               CSR_INSTRET, CSR_TIME, FLAG_NV, FP_EXP_MASK, FP_SIGN, MASK64,
                               RM_DYN, Builder)
from dbtlab.ir.env import (H_GET_FFLAGS, H_PROF_EDGE, H_RM_POP, H_RM_PUSH, H_SET_FFLAGS,
                           H_SET_FRM, HELPERS_OFF, ICBASE_OFF, JC_BITS, JC_OFF, PROF_DISPATCH,
                           PROF_EXIT, PROF_INDIRECT, PROF_KIND_SHIFT, SLOTS_OFF, WLOG_SIZE)
from dbtlab.ir.interp import InterpBuilder
from dbtlab.ir.state import (EXIT_BUDGET, EXIT_EBREAK, EXIT_ECALL, EXIT_FAULT,
                             EXIT_FENCE_I, EXIT_HOT, EXIT_ILLEGAL, EXIT_INTERP_ONE, EXIT_LOOKUP,
                             FAULT_MISALIGNED, offset)
from dbtlab.ir.abi import ADDR_LIMIT

_FOLD = InterpBuilder(None)       # constant folding uses the interpreter's arithmetic
_ICMP = {"eq": "eq", "ne": "ne", "lt": "slt", "ltu": "ult", "ge": "sge", "geu": "uge"}
_BINOP = {"add": "add", "sub": "sub", "mul": "mul", "and": "and", "or": "or", "xor": "xor",
          "shl": "shl", "lshr": "lshr", "ashr": "ashr", "udiv": "udiv", "sdiv": "sdiv",
          "urem": "urem", "srem": "srem"}
_FTY = {32: "float", 64: "double"}
_SFX = {32: "f32", 64: "f64"}
_FCMP = {"eq": "oeq", "lt": "olt", "le": "ole"}
_FROUND = {0: "roundeven", 1: "trunc", 2: "floor", 3: "ceil", 4: "round"}
_STRICT = 'metadata !"fpexcept.strict"'
_DYN = 'metadata !"round.dynamic"'

#: calling convention of block functions and exit stubs: with no callee-saved registers,
#: a chained transition does not save and restore registers around the tail call
CC = "preserve_nonecc"

OFF_PC = offset("pc")
OFF_ICOUNT = offset("icount")
OFF_LIMIT = offset("icount_limit")
OFF_AUX = offset("exit_aux")
OFF_FFLAGS = offset("fflags")
OFF_FRM = offset("frm")
OFF_FKIND = offset("fault_kind")
OFF_FADDR = offset("fault_addr")
OFF_GUEST_BASE = offset("guest_base")
OFF_ADDR_LIMIT = offset("addr_limit")
OFF_PROF_COUNTS = offset("prof_counts")
OFF_PROF_SLOTS = offset("prof_slots")
OFF_PROF_LAST = offset("prof_last")
OFF_WLOG = offset("wlog")
OFF_HOT = offset("hot_counts")
OFF_WLOG_N = offset("wlog_n")


def lit(v: int) -> str:
    """An i64 literal (LLVM parses integers as signed)."""
    v &= MASK64
    return str(v - (1 << 64) if v >> 63 else v)


@dataclass
class Slot:
    """A direct exit: a chain slot in the environment, initially the EXIT_CHAIN stub."""

    id: int
    target: int
    src_id: int = 0           # block id of the guest block it leaves (profiling)


@dataclass
class BlockCode:
    """What the emitter produced for one guest block."""

    name: str
    block: Any                # the front end's block: anything with ``pc`` and ``limit``
    table_index: int
    slots: list[Slot] = field(default_factory=list)
    successors: list[int] = field(default_factory=list)   # static direct targets
    ir_lines: int = 0
    id: int = 0               # block id (profiling counters); 0 when not profiling


class ModuleEmitter:
    """Collects blocks of one translation batch into one module."""

    def __init__(self, name: str, chaining: bool, slot_ids, profile: bool = False,
                 block_ids=None, write_log: bool = False, hot: bool = False) -> None:
        self.name = name
        self.hot = hot                     # count executions towards a region (tiering)
        self.write_log = write_log         # log every store address (differential tests)
        self.chaining = chaining
        self.profile = profile
        self._slot_ids = slot_ids          # callable returning a free slot id
        self._block_ids = block_ids        # callable returning a new block id (profiling)
        self.decls: set[str] = set()
        self.functions: list[str] = []
        self.table: list[str] = []
        self.blocks: list[BlockCode] = []

    def begin_block(self, fname: str, block: Any) -> LLVMBuilder:
        """A builder for one block function named ``fname``; ``block`` is the front end's
        block (its ``pc`` and ``limit`` are read). The front end emits the instructions
        (``begin_insn``, the semantics, ``end_insn``), then calls ``end_block``."""
        b = LLVMBuilder(self, fname)
        self.table.append(f"ptr @{fname}")
        b.code = BlockCode(fname, block, len(self.table) - 1,
                           id=self._block_ids() if self._block_ids else 0)
        return b

    def end_block(self, b: LLVMBuilder, ninsns: int, fallthrough: int) -> BlockCode:
        """Close a block function after ``ninsns`` instructions; if the last one did not end
        the block, it continues at ``fallthrough``."""
        if not b.terminated:
            b.flush()
            b.direct_exit(fallthrough)
        self.functions.append(b.finish(ninsns))
        b.code.ir_lines = len(b.lines)
        self.blocks.append(b.code)
        return b.code

    def new_slot(self, target: int) -> Slot:
        return Slot(self._slot_ids(), target)

    def text(self) -> str:
        out = [f"; dbtlab translation module {self.name}"]
        out += sorted(self.decls)
        out += self.functions
        out.append(f"@tbl_{self.name} = global [{len(self.table)} x ptr] "
                   f"[{', '.join(self.table)}]")
        out.append('attributes #0 = { nounwind strictfp "frame-pointer"="none" }')
        out.append("attributes #1 = { strictfp }")
        return "\n".join(out) + "\n"


class LLVMBuilder(Builder):
    """Emits one block function. See the module docstring for the conventions."""

    # registers reach the state before an instruction that may leave the block, so that
    # its exits see them (a region's exit paths store them instead)
    flush_before_leaving = True

    def __init__(self, mod: ModuleEmitter, fname: str) -> None:
        self.mod = mod
        self.fname = fname
        self.lines: list[str] = []
        self.n = 0
        self.code: BlockCode | None = None
        self.cache: dict[tuple, object] = {}   # committed register values
        self.pending: dict[tuple, object] = {}  # this instruction's writes
        self.dirty: dict[tuple, object] = {}    # completed writes not stored yet
        self.after: set[tuple] = set()          # @N<tag><k>@ placeholders used
        self.block_lengths: dict[str, int] = {}  # tag -> instructions in that guest block
        self.ntag = ""                           # placeholder tag of the current block
        self.ic2 = "%ic2"                        # icount after the current block's entry
        self.narrow: dict[str, str] = {}        # i64 value -> the i32 it zero-extends
        self.exits: dict[tuple, str] = {}      # (k, reason) -> exit label
        self.exit_bodies: list[str] = []
        self.phi: list[tuple[str, str]] = []   # (function pointer, predecessor label)
        self.cur = "body"
        self.terminated = False
        self.frm_checked = False
        self.uses_memory = False
        self.marked = False
        self.k = 0
        self.word = 0                            # the current instruction's encoding
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
        self.cur = lab

    @staticmethod
    def a(x) -> str:
        if isinstance(x, bool):
            return "true" if x else "false"
        if isinstance(x, int):
            return lit(x)
        return x

    def ptr(self, off: int, out: list[str] | None = None) -> str:
        """A pointer to a state field, computed right where it is used: at codegen level 0
        a GEP in the same basic block folds into the access's addressing mode, while one
        hoisted to the entry block is materialised and spilled."""
        self.n += 1
        r = f"%g{self.n}"
        (self.lines if out is None else out).append(
            f"  {r} = getelementptr i8, ptr %st, i64 {off}")
        return r

    def intrinsic(self, text: str) -> None:
        self.mod.decls.add(text)

    def helper_ptr(self, index: int, out: list[str] | None = None) -> str:
        """Load a support function pointer from the environment."""
        r = self._v()
        line = f"  {r} = load ptr, ptr {self.ptr(HELPERS_OFF + 8 * index, out)}"
        (self.lines if out is None else out).append(line)
        return r

    def to_exit(self, fn: str) -> None:
        """Leave the block by tail-calling fn (from the current basic block)."""
        self.phi.append((fn, self.cur))
        self.e("br label %exit")

    # ---- block structure -------------------------------------------------------------
    def begin_insn(self, k: int, pc: int, length: int, word: int, may_leave: bool) -> None:
        """Instruction k of the block starts at ``pc``. ``may_leave``: it can exit the block
        before completing (its predecessors' writes must reach the state first)."""
        self.k, self.pc, self.word = k, pc, word
        self.next_pc = (pc + length) & MASK64
        self.pending = {}
        self.marked = False
        if self.flush_before_leaving and may_leave:
            self.flush()

    def interpret_one(self) -> None:
        """Hand the current instruction to the interpreter: the block ends before it."""
        self.e(f"br label %{self.exit_label(self.k, EXIT_INTERP_ONE)}")
        self.terminated = True

    def end_insn(self) -> None:
        """The semantics of the current instruction have been emitted."""
        if not self.terminated:
            self.commit()

    def commit(self) -> None:
        """The instruction completed: its writes become the block's register values. They
        reach the state in memory at the next flush."""
        if self.pending:
            self.cache.update(self.pending)
            self.dirty.update(self.pending)
            self.pending = {}

    def flush(self) -> None:
        """Store the completed instructions' register writes (before anything that can
        leave the block, so every exit sees exactly the state before its instruction)."""
        for key, v in self.dirty.items():
            self.e(f"store i64 {self.a(v)}, ptr {self.ptr(self._key_offset(key))}")
        self.dirty = {}

    @staticmethod
    def _key_offset(key: tuple) -> int:
        kind, idx = key
        if kind == "x":
            return offset("x", idx)
        if kind == "f":
            return offset("f", idx)
        return offset(idx)

    def exit_label(self, k: int, reason: int, pc: int | None = None) -> str:
        """A label that leaves the block before instruction k (for EXIT_FENCE_I: after it,
        at pc) with ``reason``: state.pc set, icount counting only what ran."""
        key = (self.ntag, k, reason)
        lab = self.exits.get(key)
        if lab is None:
            lab = self.exits[key] = f"X{self.ntag}{k}_{reason}"
            pc = self.pc if pc is None else pc
            ran = k + 1 if reason == EXIT_FENCE_I else k
            body = [f"{lab}:"]
            self._exit_prologue(body)
            body.append(f"  store i64 {lit(pc)}, ptr {self.ptr(OFF_PC, body)}")
            body.append(f"  %ic_{lab} = sub i64 {self.ic2}, @N{self.ntag}{ran}@")
            self.after.add((self.ntag, ran))
            body.append(f"  store i64 %ic_{lab}, ptr {self.ptr(OFF_ICOUNT, body)}")
            if reason == EXIT_ILLEGAL:
                body.append(f"  store i64 {self.word}, ptr {self.ptr(OFF_AUX, body)}")
            if self.mod.profile:
                body.append(f"  store i64 {self.code.id | PROF_EXIT << PROF_KIND_SHIFT}, "
                            f"ptr {self.ptr(OFF_PROF_LAST, body)}")
            fn = self.helper_ptr(reason, body)
            body.append("  br label %exit")
            self.phi.append((fn, lab))
            self.exit_bodies.append("\n".join(body))
        return lab

    def _exit_prologue(self, body: list[str]) -> None:
        """Hook for the second tier (its registers reach the state in exit paths)."""

    def finish(self, ninsns: int) -> str:
        head = [f"define internal {CC} i64 @{self.fname}(ptr %st) #0 {{", "entry:",
                f"  %pic = getelementptr i8, ptr %st, i64 {OFF_ICOUNT}",
                f"  %plim = getelementptr i8, ptr %st, i64 {OFF_LIMIT}",
                "  %ic = load i64, ptr %pic",
                "  %lim = load i64, ptr %plim",
                f"  %ic2 = add i64 %ic, {ninsns}",
                "  %ok = icmp ule i64 %ic2, %lim"]
        go = "%ok"
        if self.mod.hot:          # count down to the moment this block becomes hot
            head.append(f"  %hp = load ptr, ptr {self.ptr(OFF_HOT, head)}")
            head += [f"  %hq = getelementptr i64, ptr %hp, i64 {self.code.id}",
                     "  %h = load i64, ptr %hq", "  %h1 = sub i64 %h, 1",
                     "  store i64 %h1, ptr %hq", "  %notyet = icmp ne i64 %h1, 0",
                     "  %go = and i1 %ok, %notyet"]
            go = "%go"
        head += ["  br i1 " + go + ", label %" + ("bodyp" if self.mod.profile else "body")
                 + ", label %nobudget", "nobudget:"]
        head.append(f"  store i64 {lit(self.code.block.pc)}, ptr {self.ptr(OFF_PC, head)}")
        budget_fn = self.helper_ptr(EXIT_BUDGET, head)
        if self.mod.hot:
            hot_fn = self.helper_ptr(EXIT_HOT, head)
            head.append(f"  %nbfn = select i1 %notyet, ptr {budget_fn}, ptr {hot_fn}")
            budget_fn = "%nbfn"
        head += ["  br label %exit", "body:" if not self.mod.profile else "bodyp:",
                 f"  %pic2 = getelementptr i8, ptr %st, i64 {OFF_ICOUNT}",
                 "  store i64 %ic2, ptr %pic2"]
        if self.mod.profile:
            head += self._profile_entry()
        if self.uses_memory:
            head.append(f"  %gb = load ptr, ptr {self.ptr(OFF_GUEST_BASE, head)}")
            head.append(f"  %alim = load i64, ptr {self.ptr(OFF_ADDR_LIMIT, head)}")
        self.phi.append((budget_fn, "nobudget"))
        tail = ["exit:",
                "  %fn = phi ptr " + ", ".join(f"[ {f}, %{lab} ]" for f, lab in self.phi),
                f"  %r = musttail call {CC} i64 %fn(ptr %st)",
                "  ret i64 %r", "}"]
        text = "\n".join(head + self.lines + self.exit_bodies + tail)
        self.block_lengths[""] = ninsns
        return self.substitute_counts(text)

    def substitute_counts(self, text: str) -> str:
        """@N<tag><k>@: how many instructions of block <tag> follow its kth."""
        for tag, ran in self.after:
            text = text.replace(f"@N{tag}{ran}@", str(self.block_lengths[tag] - ran))
        return text

    def _profile_entry(self) -> list[str]:
        """Profiling: count this block's execution and record a pending dynamic edge."""
        bid = self.code.id
        out: list[str] = []
        out.append(f"  %prc = load ptr, ptr {self.ptr(OFF_PROF_COUNTS, out)}")
        out += [f"  %prcp = getelementptr i64, ptr %prc, i64 {bid}",
                "  %prn = load i64, ptr %prcp", "  %prn1 = add i64 %prn, 1",
                "  store i64 %prn1, ptr %prcp"]
        out.append(f"  %prl = load i64, ptr {self.ptr(OFF_PROF_LAST, out)}")
        out += ["  %prhas = icmp ne i64 %prl, 0",
                "  br i1 %prhas, label %prec, label %body", "prec:"]
        fn = self.helper_ptr(H_PROF_EDGE, out)
        out += [f"  call void {fn}(ptr %st, i64 %prl, i64 {bid})", "  br label %body", "body:"]
        return out

    def _profile_last(self, kind: int) -> None:
        if self.mod.profile:
            self.e(f"store i64 {self.code.id | kind << PROF_KIND_SHIFT}, "
                   f"ptr {self.ptr(OFF_PROF_LAST)}")

    # ---- exits -----------------------------------------------------------------------
    def direct_exit(self, target: int) -> None:
        target &= MASK64
        self.code.successors.append(target)
        if not self.mod.chaining or self.code.block.limit:
            self._profile_last(PROF_DISPATCH)
            self.e(f"store i64 {lit(target)}, ptr {self.ptr(OFF_PC)}")
            self.to_exit(self.helper_ptr(EXIT_LOOKUP))
            return
        slot = self.mod.new_slot(target)
        slot.src_id = self.code.id
        self.code.slots.append(slot)
        if self.mod.profile:
            sp, q, c, c1 = self._v(), self._v(), self._v(), self._v()
            self.e(f"{sp} = load ptr, ptr {self.ptr(OFF_PROF_SLOTS)}")
            self.e(f"{q} = getelementptr i64, ptr {sp}, i64 {slot.id}")
            self.e(f"{c} = load i64, ptr {q}")
            self.e(f"{c1} = add i64 {c}, 1")
            self.e(f"store i64 {c1}, ptr {q}")
        f = self._v()
        self.e(f"store i64 {slot.id}, ptr {self.ptr(OFF_AUX)}")
        self.e(f"{f} = load ptr, ptr {self.ptr(SLOTS_OFF + 8 * slot.id)}")
        self.to_exit(f)

    def indirect_exit(self, target: str) -> None:
        self._profile_last(PROF_INDIRECT)
        self.e(f"store i64 {target}, ptr {self.ptr(OFF_PC)}")
        lookup = self.helper_ptr(EXIT_LOOKUP)
        if self.code.block.limit:
            self.to_exit(lookup)
            return
        # the target is even (jalr clears bit 0): it never matches the odd marker of an
        # empty entry (JC_EMPTY)
        h, idx, eo, o, ep, epc, hit, fp, fn, sel = (self._v() for _ in range(10))
        self.e(f"{h} = lshr i64 {target}, 1")
        self.e(f"{idx} = and i64 {h}, {(1 << JC_BITS) - 1}")
        self.e(f"{eo} = shl i64 {idx}, 4")
        self.e(f"{o} = add i64 {eo}, {JC_OFF}")
        self.e(f"{ep} = getelementptr i8, ptr %st, i64 {o}")
        self.e(f"{epc} = load i64, ptr {ep}")
        self.e(f"{hit} = icmp eq i64 {epc}, {target}")
        self.e(f"{fp} = getelementptr i8, ptr {ep}, i64 8")
        self.e(f"{fn} = load ptr, ptr {fp}")
        self.e(f"{sel} = select i1 {hit}, ptr {fn}, ptr {lookup}")
        self.to_exit(sel)

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
        if op == "lshr" and yi and (y & 63) < 32 and x in self.narrow:
            # a 32-bit value shifted right stays 32-bit (srliw, srlw): shift the i32
            s32 = self._v()
            self.e(f"{s32} = lshr i32 {self.narrow[x]}, {y & 63}")
            self.e(f"{r} = zext i32 {s32} to i64")
            self.narrow[r] = s32
            return r
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
        r = self._v()
        if bits == 32 and x in self.narrow:
            self.e(f"{r} = sext i32 {self.narrow[x]} to i64")
            return r
        t = self._v()
        self.e(f"{t} = trunc i64 {x} to i{bits}")
        self.e(f"{r} = sext i{bits} {t} to i64")
        return r

    def zext(self, x, bits):
        if isinstance(x, int):
            return _FOLD.zext(x, bits)
        if bits == 64:
            return x
        r = self._v()
        if bits in (8, 16, 32):      # folds to a plain register move at codegen level 0
            t = self._v()
            self.e(f"{t} = trunc i64 {x} to i{bits}")
            self.e(f"{r} = zext i{bits} {t} to i64")
            if bits == 32:
                self.narrow[r] = t
        else:
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
        self.e(f"{r} = load i64, ptr {self._home(key)}")
        self.cache[key] = r
        return r

    def _home(self, key: tuple) -> str:
        """Where a register lives between instructions: its slot in the CPU state."""
        return self.ptr(self._key_offset(key))

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
            # instructions retired before this one: the run's base + icount at block
            # entry + k (modulo 2**64, as the counter wraps; ir/env.py)
            r, base, n = self._v(), self._v(), self._v()
            self.e(f"{r} = sub i64 {self.ic2}, @N{self.ntag}{self.k}@")
            self.after.add((self.ntag, self.k))
            self.e(f"{base} = load i64, ptr {self.ptr(ICBASE_OFF)}")
            self.e(f"{n} = add i64 {r}, {base}")
            return n
        raise ValueError(f"unsupported CSR {csr:#x}")

    def _call_fflags(self):
        fn, r = self.helper_ptr(H_GET_FFLAGS), self._v()
        self.e(f"{r} = call i64 {fn}(ptr %st)")
        return r

    def write_csr(self, csr, v):
        if csr in (CSR_FFLAGS, CSR_FCSR):
            fn = self.helper_ptr(H_SET_FFLAGS)
            self.e(f"call void {fn}(ptr %st, i64 {self.a(v)})")
        if csr in (CSR_FRM, CSR_FCSR):
            frm = v if csr == CSR_FRM else self.lshr(v, 5)
            fn = self.helper_ptr(H_SET_FRM)
            self.e(f"call void {fn}(ptr %st, i64 {self.a(frm)})")
            self.frm_checked = False

    # ---- memory ----------------------------------------------------------------------
    def _host_ptr(self, addr, size: int = 1, write: bool = False) -> str:
        """Host pointer for a guest address; marks the instruction (for host faults)."""
        if not self.marked:
            self.e(f"store i64 {lit(self.pc)}, ptr {self.ptr(OFF_PC)}")
            self.marked = True
        return self._guest_ptr(addr)

    def _guest_ptr(self, addr) -> str:
        """``guest_base + addr``, clamped to the guest address space."""
        self.uses_memory = True
        p = self._v()
        if isinstance(addr, int):
            self.e(f"{p} = getelementptr i8, ptr %gb, i64 {min(addr, ADDR_LIMIT)}")
        else:
            # addresses beyond the guest address space land in the guard pages
            inb, c = self._v(), self._v()
            self.e(f"{inb} = icmp ult i64 {addr}, %alim")
            self.e(f"{c} = select i1 {inb}, i64 {addr}, i64 %alim")
            self.e(f"{p} = getelementptr i8, ptr %gb, i64 {c}")
        return p

    def load(self, addr, size, signed, for_write=False):
        # for_write needs nothing here: the store that follows faults in the host if the
        # page is not writable, and the interpreter then reports the store fault
        p = self._host_ptr(addr, size, for_write)
        ity = f"i{8 * size}"
        raw = self._v()
        # volatile: a load whose value is discarded (rd = x0) must still fault
        self.e(f"{raw} = load volatile {ity}, ptr {p}, align 1")
        if size == 8:
            return raw
        r = self._v()
        self.e(f"{r} = {'sext' if signed else 'zext'} {ity} {raw} to i64")
        return r

    def _before_store(self, p: str, addr, size: int) -> None:
        """Hook for the second tier (its stores are undo-logged)."""

    def _log_write(self, addr) -> None:
        """Differential testing: append the store's address to the write log."""
        wb, wn, wi, wp, wn1 = (self._v() for _ in range(5))
        self.e(f"{wb} = load ptr, ptr {self.ptr(OFF_WLOG)}")
        self.e(f"{wn} = load i64, ptr {self.ptr(OFF_WLOG_N)}")
        self.e(f"{wi} = and i64 {wn}, {WLOG_SIZE - 1}")
        self.e(f"{wp} = getelementptr i64, ptr {wb}, i64 {wi}")
        self.e(f"store i64 {self.a(addr)}, ptr {wp}")
        self.e(f"{wn1} = add i64 {wn}, 1")
        self.e(f"store i64 {wn1}, ptr {self.ptr(OFF_WLOG_N)}")

    def store(self, addr, v, size):
        if self.mod.write_log:
            self._log_write(addr)
        p = self._host_ptr(addr, size, True)
        self._before_store(p, addr, size)
        val = self.a(v)
        if size < 8:
            if isinstance(v, int):
                val = str(v & ((1 << (8 * size)) - 1))
            else:
                t = self._v()
                self.e(f"{t} = trunc i64 {val} to i{8 * size}")
                val = t
        self.e(f"store i{8 * size} {val}, ptr {p}, align 1")

    def cmpxchg(self, cond, addr, expected, new, size):
        """Stores unconditionally (the old value when the compare fails), so a page the
        guest may not write faults whether or not the exchange happens, as in QEMU."""
        if cond is False:
            return False
        ity = f"i{8 * size}"
        entry, lx, lj = self.cur, self._label(), self._label()
        if cond is not True:
            self.e(f"br i1 {cond}, label %{lx}, label %{lj}")
            self.put_label(lx)
        if self.mod.write_log:
            self._log_write(addr)
        p = self._host_ptr(addr, size, True)
        self._before_store(p, addr, size)
        cur, exp, eq, nv, sel = (self._v() for _ in range(5))
        self.e(f"{cur} = load {ity}, ptr {p}, align {size}")
        self.e(f"{exp} = trunc i64 {self.a(expected)} to {ity}" if size < 8 else
               f"{exp} = add i64 {self.a(expected)}, 0")
        self.e(f"{eq} = icmp eq {ity} {cur}, {exp}")
        self.e(f"{nv} = trunc i64 {self.a(new)} to {ity}" if size < 8 else
               f"{nv} = add i64 {self.a(new)}, 0")
        self.e(f"{sel} = select i1 {eq}, {ity} {nv}, {ity} {cur}")
        self.e(f"store {ity} {sel}, ptr {p}, align {size}")
        if cond is True:
            return eq
        src = self.cur
        self.e(f"br label %{lj}")
        self.put_label(lj)
        r = self._v()
        self.e(f"{r} = phi i1 [ {eq}, %{src} ], [ false, %{entry} ]")
        return r

    def check_aligned(self, addr, size):
        if isinstance(addr, int):
            if addr & (size - 1):
                self._fault_now(FAULT_MISALIGNED, addr)
                self.put_label(self._label())    # unreachable continuation
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
    # control transfers end the block; the second tier changes only these three steps
    def _end_block(self) -> None:
        self.commit()
        self.flush()
        self.terminated = True

    def goto(self, target: int) -> None:
        """Continue at a known guest pc: here, through a chain slot."""
        self.direct_exit(target)

    def goto_computed(self, target: str) -> None:
        self.indirect_exit(target)

    def jump(self, target):
        self._end_block()
        if isinstance(target, int):
            self.goto(target)
        else:
            self.goto_computed(target)

    def branch(self, cond, target):
        self._end_block()
        if isinstance(cond, bool):
            self.goto(target if cond else self.next_pc)
            return
        lt, lf = self._label(), self._label()
        self.e(f"br i1 {cond}, label %{lt}, label %{lf}")
        self.put_label(lt)
        self.goto(target)
        self.put_label(lf)
        self.goto(self.next_pc)

    def trap(self, kind):
        self.terminated = True
        if kind == "fence.i":
            self.commit()
            self.flush()
            lab = self.exit_label(self.k, EXIT_FENCE_I, pc=self.next_pc)
        else:
            self.pending = {}
            self.flush()
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
        fn, saved = self.helper_ptr(H_RM_PUSH), self._v()
        self.e(f"{saved} = call i32 {fn}(i64 {rm})")
        return saved

    def _end_rounding(self, saved) -> None:
        if saved is not None:
            fn = self.helper_ptr(H_RM_POP)
            self.e(f"call void {fn}(i32 {saved})")

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
        if op != "fma":
            return self._from_fp(r, fmt)
        bits = self._from_fp(r, fmt, canon=False)
        isnan = self.f_is_nan(bits, fmt)
        self._fma_invalid_quirk(isnan, args, fmt)
        return self.select(isnan, self.const(CANONICAL_NAN[fmt]), bits)

    def _fma_invalid_quirk(self, isnan, args, fmt: int) -> None:
        """x86 FMA raises no invalid flag for inf*0 + quiet NaN; RISC-V requires NV there.
        Checked only when the result is a NaN (a cold path), so ordinary fmas pay a branch."""
        lnan, lj = self._label(), self._label()
        self.e(f"br i1 {isnan}, label %{lnan}, label %{lj}")
        self.put_label(lnan)
        a, b, c = args
        mag = self.const(FP_SIGN[fmt] - 1)

        def is_inf(v):
            return self.eq(self.and_(v, mag), self.const(FP_EXP_MASK[fmt]))

        def is_zero(v):
            return self.eq(self.and_(v, mag), self.const(0))

        inf_zero = self.bop("or", self.bop("and", is_inf(a), is_zero(b)),
                            self.bop("and", is_zero(a), is_inf(b)))
        qnan_c = self.bop("and", self.f_is_nan(c, fmt), self.bop("not", self.f_is_snan(c, fmt)))
        self.fflags_or(self.select(self.bop("and", inf_zero, qnan_c), self.const(FLAG_NV),
                                   self.const(0)))
        self.e(f"br label %{lj}")
        self.put_label(lj)

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
        self.e(f"{old} = load i64, ptr {self.ptr(OFF_FFLAGS)}")
        self.e(f"{new} = or i64 {old}, {self.a(flags)}")
        self.e(f"store i64 {new}, ptr {self.ptr(OFF_FFLAGS)}")

