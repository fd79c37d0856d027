"""The stencil lowering: the LLVM lowering of one instruction form with its operands as holes.

``StencilBuilder`` is the first tier's ``LLVMBuilder`` with four changes, so that a stencil
computes exactly what a first-tier block does for the same instruction:

* values the semantics compute from the instruction's fields and pc (``Hole`` expressions,
  see ``ir/holes.py``) become references to external symbols ``@H<n>``; the object file
  leaves a relocation there and the patcher writes the value. Register numbers become
  state offsets the same way; a write to ``x[rd]`` goes to a sink slot when rd is 0, so the
  x0 rule costs nothing at run time;
* a stencil holds one instruction: registers are loaded when read and stored when the
  instruction completes (the state is precise between any two stencils);
* the instruction counts a first-tier block folds in as constants (how many instructions of
  the block remain) are holes too;
* an instruction that does not end the block continues with a ``musttail`` call to
  ``@H_cont``, which the patcher turns into a fall-through into the next stencil;
* no guest pc is stored before a memory access: a host fault's pc falls inside one
  instruction's stencil, and the patcher's layout of the block says which.

Hole kinds say how a value is materialised (and which relocation the patcher will meet):
``off`` — a byte offset into the environment (< 2**31, folded into addressing modes);
``i32`` — a sign-extended 32-bit value (immediates); ``u32`` — a zero-extended one
(instruction words); ``i64`` — anything else (pc-derived values), loaded with a ``movabs``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dbtlab.ir.env import HELPERS_OFF, ICBASE_OFF, SLOTS_OFF
from dbtlab.ir.holes import MASK64, Hole
from dbtlab.ir.llvm_emit import (CC, OFF_ADDR_LIMIT, OFF_AUX, OFF_GUEST_BASE, OFF_HOT,
                                 OFF_ICOUNT, OFF_LIMIT, OFF_PC, LLVMBuilder, ModuleEmitter)
from dbtlab.ir.state import EXIT_BUDGET, EXIT_FENCE_I, EXIT_HOT, EXIT_ILLEGAL, offset

CONT = "H_cont"
OFF_X0 = offset("x")
OFF_F0 = offset("f")
OFF_SINK = offset("x_sink")

#: symbol ranges (LLVM's !absolute_symbol) per kind: they decide the relocation type
_RANGE = {"off": "!{i64 0, i64 2147483648}", "i32": "!{i64 0, i64 4294967296}",
          "u32": "!{i64 0, i64 4294967296}", "i64": "!{i64 0, i64 -1}"}

#: the fields a stencil's holes are written in (the patcher supplies them per instruction)
#:   rd rs1 rs2 rs3 imm word pc — the instruction's; left — instructions of the block from
#:   this one to its end; n — the block's length; slot0 slot1 — chain slots of direct exits
BLOCK_FIELDS = ("left", "n", "slot0", "slot1", "target")


class Unstencilable(Exception):
    """This instruction form cannot be a stencil (the LLVM tier translates it)."""


class HoleValue(str):
    """An SSA value whose number is known only at patch time (the builder sees a run-time
    value; ``jump`` and ``branch`` still know it is a static target)."""

    hole: Hole

    def __new__(cls, text: str, hole: Hole) -> "HoleValue":
        s = super().__new__(cls, text)
        s.hole = hole
        return s


@dataclass
class HoleSpec:
    symbol: str
    kind: str
    expr: Hole


@dataclass
class _Code:
    """What LLVMBuilder's exits read from ``self.code`` (stencils chain through slots)."""

    class _Block:
        limit = None
        pc = 0

    block: _Block = field(default_factory=_Block)
    id: int = 0
    slots: list = field(default_factory=list)
    successors: list = field(default_factory=list)


class StencilModule(ModuleEmitter):
    """Collects stencil functions and the holes they share (one symbol per expression)."""

    def __init__(self, name: str = "stencils") -> None:
        super().__init__(name, chaining=True, slot_ids=None)
        self.holes: dict[str, HoleSpec] = {}

    def hole(self, expr: Hole, kind: str) -> HoleSpec:
        key = f"{kind}:{expr.key()}"
        spec = self.holes.get(key)
        if spec is None:
            spec = self.holes[key] = HoleSpec(f"H{len(self.holes)}", kind, expr)
        return spec

    def text(self) -> str:
        out = [f"; dbtlab stencil library {self.name}"]
        out += sorted(self.decls)
        out.append(f"declare {CC} i64 @{CONT}(ptr)")
        ranges = sorted(set(_RANGE.values()))
        for spec in self.holes.values():
            md = ranges.index(_RANGE[spec.kind])
            out.append(f"@{spec.symbol} = external dso_local global i8, !absolute_symbol !{md}")
        out += self.functions
        out.append('attributes #0 = { nounwind strictfp "frame-pointer"="none" }')
        out.append("attributes #1 = { strictfp }")
        out += [f"!{i} = {r}" for i, r in enumerate(ranges)]
        return "\n".join(out) + "\n"


class StencilBuilder(LLVMBuilder):
    """Emits one stencil function: one instruction form, operands as holes."""

    def __init__(self, mod: StencilModule, fname: str) -> None:
        super().__init__(mod, fname)
        self.mod: StencilModule = mod
        self.code = _Code()
        self.entry: list[str] = []          # hole materialisations (dominate every use)
        self.direct: list[Hole] = []        # targets of the direct exits, by slot index
        self.regs: dict[str, Hole] = {}     # register key text -> its hole
        self.wrote: dict[str, set] = {}     # kind -> keys written with a symbolic number
        self.ntag = ""
        self.ic2 = None

    # ---- holes ------------------------------------------------------------------------
    def _hole(self, expr: Hole, kind: str) -> str:
        spec = self.mod.hole(expr, kind)
        self.n += 1
        if kind == "off":
            r = f"%h{self.n}"
            self.entry.append(f"  {r} = ptrtoint ptr @{spec.symbol} to i64")
            return r
        if kind == "i64":
            # LLVM stores an absolute symbol as a 32-bit immediate whatever its declared
            # range: a movabs of our own keeps all 64 bits (an R_X86_64_64 relocation)
            r = f"%h{self.n}"
            self.entry.append(f'  {r} = call i64 asm "movabsq $1, $0", "=r,i"(ptr @{spec.symbol})')
            return r
        t, r = f"%h{self.n}t", f"%h{self.n}"
        self.entry.append(f"  {t} = ptrtoint ptr @{spec.symbol} to i32")
        self.entry.append(f"  {r} = {'sext' if kind == 'i32' else 'zext'} i32 {t} to i64")
        return r

    @staticmethod
    def _kind(expr: Hole) -> str:
        f = expr.fields()
        if "pc" in f or "target" in f:
            return "i64"
        if f == {"word"}:
            return "u32"
        return "i32"

    def const(self, v):
        if isinstance(v, Hole):
            return HoleValue(self._hole(v, self._kind(v)), v)
        return v & MASK64

    def a(self, x) -> str:
        if isinstance(x, Hole):
            return self.const(x)
        return LLVMBuilder.a(x)

    def ptr(self, off, out: list[str] | None = None) -> str:
        if isinstance(off, Hole):
            off = self._hole(off, "off")
        return super().ptr(off, out)

    # ---- registers: loaded when read, stored when the instruction completes ------------
    def _key(self, kind: str, r) -> tuple:
        k = r.key() if isinstance(r, Hole) else r
        if isinstance(r, Hole):
            self.regs[k] = r
        written = self.wrote.get(kind)
        if written and k not in written:
            # a read of one register after a write to a symbolic one: they may be the same
            # register, which the form cannot know
            raise Unstencilable(f"{kind}-register read after a write in one instruction")
        return (kind, k)

    def _wrote(self, kind: str, r) -> None:
        if isinstance(r, Hole):
            self.wrote.setdefault(kind, set()).add(r.key())

    def _key_offset(self, key: tuple):
        kind, idx = key
        if kind in ("x", "f", "w"):
            if kind == "w":                    # a write to x[rd]: x0's go to the sink
                r = self.regs[idx]
                return OFF_X0 + r * 8 + (r == 0) * (OFF_SINK - OFF_X0)
            base = OFF_X0 if kind == "x" else OFF_F0
            r = self.regs.get(idx, idx) if isinstance(idx, str) else idx
            return base + r * 8
        return offset(idx)

    def rx(self, r):
        if isinstance(r, Hole):                # x[0] always holds 0
            return self._read(self._key("x", r))
        return super().rx(r)

    def wx(self, r, v) -> None:
        if isinstance(r, Hole):
            k = self._key("x", r)[1]
            self._wrote("x", r)
            self.pending[("w", "x", k)] = v
            self.pending[("x", k)] = v         # later reads of the same rd see it
            return
        super().wx(r, v)

    def read_f(self, r):
        return self._read(self._key("f", r))

    def write_f(self, r, v):
        key = self._key("f", r)
        self._wrote("f", r)
        self.pending[key] = v

    def flush(self) -> None:
        for key, v in self.dirty.items():
            if key[0] == "x" and isinstance(key[1], str) and ("w", "x", key[1]) in self.dirty:
                continue                        # stored through its sink-aware offset below
            home = ("w", key[2]) if key[0] == "w" else key
            self.e(f"store i64 {self.a(v)}, ptr {self.ptr(self._key_offset(home))}")
        self.dirty = {}

    # ---- instruction counts -------------------------------------------------------------
    def _icount_before(self, ran_after: bool, out: list[str]) -> str:
        """icount as it is before this instruction (after it, for ``ran_after``): the
        block entry added the whole block, ``left`` instructions of it have not run."""
        left = Hole.field("left") - 1 if ran_after else Hole.field("left")
        ic, r = self._v(), self._v()
        out.append(f"  {ic} = load i64, ptr {self.ptr(OFF_ICOUNT, out)}")
        out.append(f"  {r} = sub i64 {ic}, {self._hole(left, 'i32')}")
        return r

    def read_csr(self, csr):
        from dbtlab.ir.builder import CSR_CYCLE, CSR_INSTRET, CSR_TIME
        if csr in (CSR_CYCLE, CSR_TIME, CSR_INSTRET):     # the run's base + icount (env.py)
            r, base, n = self._icount_before(False, self.lines), self._v(), self._v()
            self.e(f"{base} = load i64, ptr {self.ptr(ICBASE_OFF)}")
            self.e(f"{n} = add i64 {r}, {base}")
            return n
        return super().read_csr(csr)

    # ---- exits ------------------------------------------------------------------------
    def exit_label(self, k: int, reason: int, pc=None) -> str:
        key = (reason, pc.key() if isinstance(pc, Hole) else pc)
        lab = self.exits.get(key)
        if lab is None:
            lab = self.exits[key] = f"X{len(self.exits)}_{reason}"
            body = [f"{lab}:"]
            pcv = self.pc if pc is None else pc
            body.append(f"  store i64 {self.a(pcv)}, ptr {self.ptr(OFF_PC, body)}")
            ic = self._icount_before(reason == EXIT_FENCE_I, body)
            body.append(f"  store i64 {ic}, ptr {self.ptr(OFF_ICOUNT, body)}")
            if reason == EXIT_ILLEGAL:
                body.append(f"  store i64 {self.a(self.word)}, ptr {self.ptr(OFF_AUX, body)}")
            fn = self.helper_ptr(reason, body)
            body.append("  br label %exit")
            self.phi.append((fn, lab))
            self.exit_bodies.append("\n".join(body))
        return lab

    def _host_ptr(self, addr, size: int = 1, write: bool = False) -> str:
        # no pc store before a memory access: the runtime maps the faulting host pc to
        # its guest instruction through the block's layout
        return self._guest_ptr(addr)

    def direct_exit(self, target) -> None:
        target = target.hole if isinstance(target, HoleValue) else target
        if not isinstance(target, Hole):
            target = Hole("const", target & MASK64)
        i = len(self.direct)
        if i > 1:
            raise Unstencilable("more than two direct exits")
        self.direct.append(target)
        slot = Hole.field(f"slot{i}")
        f = self._v()
        self.e(f"store i64 {self._hole(slot, 'i32')}, ptr {self.ptr(OFF_AUX)}")
        self.e(f"{f} = load ptr, ptr {self.ptr(SLOTS_OFF + slot * 8)}")
        self.to_exit(f)

    def jump(self, target):
        if isinstance(target, HoleValue):
            self._end_block()
            self.goto(target.hole)
            return
        super().jump(target)

    # ---- the function -----------------------------------------------------------------
    def finish_stencil(self) -> str:
        """The whole function text (call once, after the instruction's semantics)."""
        if not self.terminated:
            self.flush()
        tail: list[str] = []
        if not self.terminated:
            tail += [f"  %cont = musttail call {CC} i64 @{CONT}(ptr %st)", "  ret i64 %cont"]
        if self.phi:
            tail += self.exit_bodies
            tail += ["exit:",
                     "  %fn = phi ptr " + ", ".join(f"[ {f}, %{lab} ]" for f, lab in self.phi),
                     f"  %r = musttail call {CC} i64 %fn(ptr %st)", "  ret i64 %r"]
        head = [f"define dso_local {CC} i64 @{self.fname}(ptr %st) #0 {{", "entry:"]
        head += self.entry                   # complete now: every hole has been met
        if self.uses_memory:
            head.append(f"  %gb = load ptr, ptr {self.ptr(OFF_GUEST_BASE, head)}")
            head.append(f"  %alim = load i64, ptr {self.ptr(OFF_ADDR_LIMIT, head)}")
        head += ["  br label %body", "body:"]
        return "\n".join(head + self.lines + tail + ["}"])


def entry_stencil(mod: StencilModule, hot: bool = False) -> str:
    """The block prologue: count the block's ``n`` instructions against the limit; if they
    do not fit, leave with state.pc at the block (the runtime runs a shorter variant).
    ``hot``: also count down the block's hotness counter (``id``), as first-tier blocks
    do, and leave with EXIT_HOT when it reaches zero (the runtime forms a region)."""
    name = "st__entry_hot" if hot else "st__entry"
    b = StencilBuilder(mod, name)
    n = b._hole(Hole.field("n"), "i32")
    pc = b._hole(Hole.field("pc"), "i64")
    bid = b._hole(Hole.field("id"), "i32") if hot else None
    out = [f"define dso_local {CC} i64 @{name}(ptr %st) #0 {{", "entry:", *b.entry]
    out.append(f"  %ic = load i64, ptr {b.ptr(OFF_ICOUNT, out)}")
    out.append(f"  %lim = load i64, ptr {b.ptr(OFF_LIMIT, out)}")
    out += [f"  %ic2 = add i64 %ic, {n}", "  %ok = icmp ule i64 %ic2, %lim"]
    go = "%ok"
    if hot:
        out.append(f"  %hp = load ptr, ptr {b.ptr(OFF_HOT, out)}")
        out += [f"  %hq = getelementptr i64, ptr %hp, i64 {bid}", "  %hc = load i64, ptr %hq",
                "  %hc1 = sub i64 %hc, 1", "  store i64 %hc1, ptr %hq",
                "  %notyet = icmp ne i64 %hc1, 0", "  %go = and i1 %ok, %notyet"]
        go = "%go"
    out += [f"  br i1 {go}, label %run, label %nobudget", "run:"]
    out.append(f"  store i64 %ic2, ptr {b.ptr(OFF_ICOUNT, out)}")
    out += [f"  %c = musttail call {CC} i64 @{CONT}(ptr %st)", "  ret i64 %c", "nobudget:"]
    out.append(f"  store i64 {pc}, ptr {b.ptr(OFF_PC, out)}")
    fn = b.helper_ptr(EXIT_BUDGET, out)
    if hot:
        hot_fn = b.helper_ptr(EXIT_HOT, out)
        out.append(f"  %nbfn = select i1 %notyet, ptr {fn}, ptr {hot_fn}")
        fn = "%nbfn"
    out += [f"  %r = musttail call {CC} i64 {fn}(ptr %st)", "  ret i64 %r", "}"]
    return "\n".join(out)


def goto_stencil(mod: StencilModule) -> tuple[str, list[Hole]]:
    """A block that ends without a control transfer (page end, length limit) continues at
    ``target`` through a chain slot."""
    b = StencilBuilder(mod, "st__goto")
    b.direct_exit(Hole.field("target"))
    b.terminated = True
    return b.finish_stencil(), b.direct


__all__ = ["StencilBuilder", "StencilModule", "Unstencilable", "HoleSpec", "HoleValue",
           "entry_stencil", "goto_stencil", "CONT", "BLOCK_FIELDS", "HELPERS_OFF"]
