"""Second-tier translation: a hot region of guest blocks as one LLVM function.

A region is a set of guest blocks (a loop, or a trace) entered at one guest pc. Inside it,
guest registers live in allocas that the optimiser promotes to SSA values, so they stay in
host registers across the region's blocks; edges between the region's blocks are plain
branches. The same semantics functions and the same lowering as the first tier are used
(``RegionBuilder`` only changes where register values live and how blocks connect), so a
region computes exactly what the first-tier blocks do.

Precise state without paying for it on the hot path: registers reach the CPU state only at
*checkpoints* — the region's entry, and a back edge once every CHECKPOINT_EVERY iterations
or when the undo log fills — and on the way out.
Guest memory is accessed directly, as in the first tier; every guest store inside the
region first appends (address, old value) to an undo log that each checkpoint empties. If
an access faults in the host (unmapped, read-only, a page of translated code...), the
runtime undoes the stores since the checkpoint, which leaves memory and registers exactly
as they were at the checkpoint, and replays from there in the first tier, which reaches the
faulting instruction again and handles it precisely. The same holds for exits that the
region takes on purpose (syscalls, the instruction limit, the interpreter fallback): they
store the registers as of the last completed instruction.

Every guest block of the region still counts its instructions on entry and checks the
instruction limit (``--max-insns``, exit requests). Exits to blocks outside the region are
chain slots (linked to first-tier blocks or other regions); indirect exits use the jump
cache.
"""

from __future__ import annotations

from dbtlab.ir.llvm_emit import (CC, EXIT_BUDGET, MASK64, OFF_ADDR_LIMIT, OFF_GUEST_BASE,
                                 OFF_ICOUNT, OFF_LIMIT, OFF_PC, OFF_PROF_COUNTS, OFF_PROF_LAST,
                                 LLVMBuilder, ModuleEmitter, lit)
from dbtlab.ir.env import (CHECKPOINT_EVERY, H_PROF_EDGE, PROF_CHAINED, PROF_KIND_SHIFT,
                           ULOG_SIZE)
from dbtlab.ir.state import offset

OFF_ULOG = offset("ulog")
OFF_ULOG_N = offset("ulog_n")

#: how big a region may be: the undo log must hold a whole iteration's stores
MAX_REGION_BLOCKS = 64
MAX_REGION_INSNS = 1024


class RegionBuilder(LLVMBuilder):
    """LLVMBuilder whose register values live in allocas and whose block exits may be
    branches to other blocks of the same function."""

    flush_before_leaving = False       # exit paths flush the registers themselves

    def __init__(self, mod: ModuleEmitter, fname: str, inside: set[int]) -> None:
        super().__init__(mod, fname)
        self.inside = inside                  # guest pcs of the region's blocks
        self.allocas: dict[tuple, str] = {}
        self.written: set[tuple] = set()       # keys written anywhere in the region
        self.order: dict[int, int] = {}        # block pc -> emission index
        self.index = 0                         # index of the block being emitted
        self.ids: dict[int, int] = {}          # block pc -> first-tier block id (profiles)
        self.uses_undo = False

    # ---- register storage ------------------------------------------------------------
    def _alloca(self, key: tuple) -> str:
        a = self.allocas.get(key)
        if a is None:
            kind, idx = key
            a = self.allocas[key] = f"%a_{kind}{idx}"
        return a

    def _home(self, key: tuple) -> str:
        """In a region a register lives in its alloca (an SSA value after mem2reg)."""
        return self._alloca(key)

    def commit(self) -> None:
        for key, v in self.pending.items():
            self.e(f"store i64 {self.a(v)}, ptr {self._alloca(key)}")
            self.cache[key] = v
            self.written.add(key)
        self.pending = {}

    def flush(self) -> None:
        """On the way out: every register the region writes reaches the state (the values
        are read back from the allocas, i.e. as of the last completed instruction)."""
        self.e("@FLUSHALL@")
        self.e(f"store i64 {self.ic2}, ptr {self.ptr(OFF_ICOUNT)}")

    def _exit_prologue(self, body: list[str]) -> None:
        body.append("@FLUSHALL@")

    def _host_ptr(self, addr, size: int = 1, write: bool = False) -> str:
        """The first tier's address computation, without the pc marker: a fault here is
        rolled back to the last checkpoint instead."""
        return self._guest_ptr(addr)

    def _undo(self, p: str, addr, size: int) -> None:
        """Log (address, old contents) before a store; the log empties at checkpoints."""
        self.uses_undo = True
        old, n, e, vp, n1 = (self._v() for _ in range(5))
        ity = f"i{8 * size}"
        self.e(f"{old} = load {ity}, ptr {p}, align 1")
        self.e(f"{n} = load i64, ptr %aun")
        self.e(f"{e} = getelementptr [2 x i64], ptr %ulog, i64 {n}")
        tagged = self.or_(addr, self.const(size << 56))     # the size rides in the top byte
        self.e(f"store i64 {self.a(tagged)}, ptr {e}")
        self.e(f"{vp} = getelementptr i64, ptr {e}, i64 1")
        wide = old
        if size < 8:
            wide = self._v()
            self.e(f"{wide} = zext {ity} {old} to i64")
        self.e(f"store i64 {wide}, ptr {vp}")
        self.e(f"{n1} = add i64 {n}, 1")
        self.e(f"store i64 {n1}, ptr %aun")
        # the count must be in the state when a store faults
        self.e(f"store i64 {n1}, ptr {self.ptr(OFF_ULOG_N)}")

    def _before_store(self, p: str, addr, size: int) -> None:
        self._undo(p, addr, size)

    def maybe_checkpoint(self, pc: int) -> None:
        """Every CHECKPOINT_EVERY back edges, or when the undo log could overflow before
        the next back edge, take a checkpoint (a rollback replays at most that much)."""
        c, c1, n, full, due, go = (self._v() for _ in range(6))
        lcp, lgo = self._label(), self._label()
        self.e(f"{c} = load i64, ptr %acp")
        self.e(f"{c1} = sub i64 {c}, 1")
        self.e(f"store i64 {c1}, ptr %acp")
        self.e(f"{n} = load i64, ptr %aun")
        self.e(f"{full} = icmp ugt i64 {n}, {ULOG_SIZE - MAX_REGION_INSNS - 1}")
        self.e(f"{due} = icmp eq i64 {c1}, 0")
        self.e(f"{go} = or i1 {full}, {due}")
        self.e(f"br i1 {go}, label %{lcp}, label %{lgo}")
        self.put_label(lcp)
        self.checkpoint(pc)
        self.e(f"store i64 {CHECKPOINT_EVERY}, ptr %acp")
        self.e(f"br label %{lgo}")
        self.put_label(lgo)

    def checkpoint(self, pc: int) -> None:
        """Registers and icount to the state, the log emptied: a fault from here on rolls
        back to this point and resumes at pc."""
        self.e("@FLUSHALL@")
        self.e(f"store i64 {self.ic2}, ptr {self.ptr(OFF_ICOUNT)}")
        self.e(f"store i64 {lit(pc)}, ptr {self.ptr(OFF_PC)}")
        self.e("store i64 0, ptr %aun")
        self.e(f"store i64 0, ptr {self.ptr(OFF_ULOG_N)}")

    # ---- blocks ----------------------------------------------------------------------
    def begin_region_block(self, idx: int, pc: int, ninsns: int, block_id: int = 0) -> None:
        """Label, instruction count and limit check of the region's idx-th block (at guest
        ``pc``, ``ninsns`` instructions; ``block_id`` its first-tier id, for profiles)."""
        self.index = idx
        self.code.id = block_id                # exits and counters name this block
        self.ntag = f"b{idx}_"
        self.block_lengths[self.ntag] = ninsns
        self.ic2 = f"%ic2_{idx}"
        self.cache = {}
        self.narrow = {}
        self.frm_checked = False
        self.terminated = False
        lab, ok, nob = f"B{pc:x}", f"B{pc:x}_ok", f"B{pc:x}_nob"
        self.put_label(lab)
        ic, lim, c = f"%ic_{idx}", f"%lim_{idx}", f"%okc_{idx}"
        self.e(f"{ic} = load i64, ptr %aic")
        self.e(f"{self.ic2} = add i64 {ic}, {ninsns}")
        self.e(f"{lim} = load i64, ptr {self.ptr(OFF_LIMIT)}")
        self.e(f"{c} = icmp ule i64 {self.ic2}, {lim}")
        self.e(f"br i1 {c}, label %{ok}, label %{nob}")
        self.put_label(nob)                   # limit reached: leave with the block unrun
        self.e("@FLUSHALL@")
        self.e(f"store i64 {ic}, ptr {self.ptr(OFF_ICOUNT)}")
        self.e(f"store i64 {lit(pc)}, ptr {self.ptr(OFF_PC)}")
        self.to_exit(self.helper_ptr(EXIT_BUDGET))
        self.put_label(ok)
        self.e(f"store i64 {self.ic2}, ptr %aic")
        if self.mod.profile and block_id:      # the first-tier block's counter goes on
            pc_, q, c, c1 = self._v(), self._v(), self._v(), self._v()
            self.e(f"{pc_} = load ptr, ptr {self.ptr(OFF_PROF_COUNTS)}")
            self.e(f"{q} = getelementptr i64, ptr {pc_}, i64 {block_id}")
            self.e(f"{c} = load i64, ptr {q}")
            self.e(f"{c1} = add i64 {c}, 1")
            self.e(f"store i64 {c1}, ptr {q}")

    def goto(self, target: int) -> None:
        """Go to a guest pc: a branch inside the region (registers stay in the allocas),
        or out of it through a chain slot after the registers reach the state."""
        target &= MASK64
        if target in self.inside:
            if self.order[target] <= self.index:     # a back edge: checkpoint now and then
                self.maybe_checkpoint(target)
            dst = self.ids.get(target)
            if self.mod.profile and self.code.id and dst:    # the transition, as a slot's
                fn = self.helper_ptr(H_PROF_EDGE)
                self.e(f"call void {fn}(ptr %st, i64 "
                       f"{self.code.id | PROF_CHAINED << PROF_KIND_SHIFT}, i64 {dst})")
            self.e(f"br label %B{target:x}")
            return
        self.flush()
        self.direct_exit(target)

    def _end_block(self) -> None:
        self.commit()                  # registers stay in the allocas: exits flush them
        self.terminated = True

    def goto_computed(self, target: str) -> None:
        self.flush()
        self.indirect_exit(target)

    def finish_region(self) -> str:
        keys = sorted(self.allocas)
        head = [f"define internal {CC} i64 @{self.fname}(ptr %st) #0 {{", "entry:",
                "  %aic = alloca i64"]
        head += [f"  {self.allocas[k]} = alloca i64" for k in keys]
        for k in keys:                          # the region starts from the CPU state
            v = f"%in_{k[0]}{k[1]}"
            head.append(f"  {v} = load i64, ptr {self.ptr(self._key_offset(k), head)}")
            head.append(f"  store i64 {v}, ptr {self.allocas[k]}")
        head.append(f"  %ic0 = load i64, ptr {self.ptr(OFF_ICOUNT, head)}")
        head.append("  store i64 %ic0, ptr %aic")
        if self.uses_memory:
            head.append(f"  %gb = load ptr, ptr {self.ptr(OFF_GUEST_BASE, head)}")
            head.append(f"  %alim = load i64, ptr {self.ptr(OFF_ADDR_LIMIT, head)}")
        head.append("  %aun = alloca i64")
        head.append("  store i64 0, ptr %aun")
        head.append("  %acp = alloca i64")
        head.append(f"  store i64 {CHECKPOINT_EVERY}, ptr %acp")
        # the entry is the first checkpoint: a fault rolls back to here and replays from
        # this pc (the state's pc may still hold a first-tier block's fault marker)
        head.append(f"  store i64 {lit(self.code.entry)}, ptr {self.ptr(OFF_PC, head)}")
        if self.uses_undo:
            head.append(f"  %ulog = load ptr, ptr {self.ptr(OFF_ULOG, head)}")
            head.append(f"  store i64 0, ptr {self.ptr(OFF_ULOG_N, head)}")
        entry_id = self.ids.get(self.code.entry)
        if self.mod.profile and entry_id:
            # a transition pending from a dispatch or indirect jump lands on the entry
            head.append(f"  %prl = load i64, ptr {self.ptr(OFF_PROF_LAST, head)}")
            head += ["  %prhas = icmp ne i64 %prl, 0",
                     "  br i1 %prhas, label %rprec, label %rpgo", "rprec:"]
            fn = self.helper_ptr(H_PROF_EDGE, head)
            head += [f"  call void {fn}(ptr %st, i64 %prl, i64 {entry_id})",
                     "  br label %rpgo", "rpgo:"]
        head.append(f"  br label %B{self.code.entry:x}")
        tail = ["exit:",
                "  %fn = phi ptr " + ", ".join(f"[ {f}, %{lab} ]" for f, lab in self.phi),
                f"  %r = musttail call {CC} i64 %fn(ptr %st)",
                "  ret i64 %r", "}"]
        body = []
        flush_all = []
        for k in sorted(self.written):
            # one value per store: loaded from the alloca where the flush happens
            flush_all.append(k)
        n = 0
        exit_lines = [ln for body in self.exit_bodies for ln in body.split("\n")]
        for line in self.lines + exit_lines:
            if line.strip() == "@FLUSHALL@":
                for k in flush_all:
                    n += 1
                    body.append(f"  %fa{n} = load i64, ptr {self.allocas[k]}")
                    body.append(f"  %fg{n} = getelementptr i8, ptr %st, i64 "
                                f"{self._key_offset(k)}")
                    body.append(f"  store i64 %fa{n}, ptr %fg{n}")
                continue
            body.append(line)
        return self.substitute_counts("\n".join(head + body + tail))


def begin_region(mod: ModuleEmitter, code, pcs: list[int], ids: list[int] | None) -> RegionBuilder:
    """A builder for a region function named ``code.name``, entered at ``code.entry``, whose
    blocks start at ``pcs`` (in emission order; ``ids`` their first-tier block ids). The front
    end emits each block (``begin_region_block``, its instructions, ``goto`` its fall-through
    if it did not end) and then calls ``end_region``. ``code`` gets the slots, successors and
    table index; it is anything with the attributes of ``BlockCode`` and an ``entry``."""
    mod.table.append(f"ptr @{code.name}")
    code.table_index = len(mod.table) - 1
    b = RegionBuilder(mod, code.name, set(pcs))
    b.code = code
    b.order = {pc: i for i, pc in enumerate(pcs)}
    b.ids = dict(zip(pcs, ids or ()))
    return b


def end_region(mod: ModuleEmitter, b: RegionBuilder) -> None:
    mod.functions.append(b.finish_region())
