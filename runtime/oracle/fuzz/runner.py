"""Running cases on engines, comparing their final states, and narrowing a difference
down to the first instruction where the engines disagree.

One :class:`Engine` per accelerator and per worker process, reused for every case: a
:class:`BareMachine` with a 64 KiB code region and the scratch data window. Between cases
only the CPU state and the window are rewritten. A batch of cases is laid out one after
another in the code region with one write; that write goes through ``GuestMemory.poke``,
whose code-write listeners make every accelerator drop what it translated from those pages
(interp's decode cache, llvm's blocks and jump cache, unicorn's TBs), so a stale
translation never runs (``tests/runtime/test_fuzz.py`` checks this on every engine).

A *snapshot* is what is compared: pc, x, f, fflags, frm (the CPU state's bytes), the
reservation (address and value only while it is held), the exit (reason, instructions
executed, fault kind and address for a fault, the word for an illegal instruction) and the
whole scratch window. Equal snapshots compare as equal tuples (memcmp).
"""

from __future__ import annotations

import ctypes
import logging
import struct
from dataclasses import dataclass, field

from dbtlab.ir.state import (EXIT_BUDGET, EXIT_FAULT, EXIT_ILLEGAL, EXIT_NAMES, F_NAMES,
                             FAULT_NAMES, X_NAMES)
from dbtlab.runtime.config import RunConfig
from dbtlab.runtime.errors import DbtError
from dbtlab.runtime.oracle.bare import CODE_BASE, DATA_BASE, BareMachine
from dbtlab.runtime.oracle.deviations import State, explain, may_deviate, repair, trap_of_exit
from dbtlab.runtime.oracle.fuzz.case import WINDOW, Case
from dbtlab.runtime.linux.memory import GuestFault
from dbtlab.translator.decode import decode
from dbtlab.translator.insn import Insn

log = logging.getLogger(__name__)

CODE_SIZE = 0x10000
_ARCH_BYTES = 8 * 67                 # x[32] f[32] pc fflags frm
_ARCH = struct.Struct("<67Q")
_M64 = (1 << 64) - 1


@dataclass(frozen=True)
class Snap:
    """A comparable end state (see the module docstring)."""

    regs: bytes
    res: tuple
    exit: tuple                      # (reason, executed, fault kind, fault addr, word)
    window: bytes

    def key(self) -> tuple:
        return (self.regs, self.res, self.exit, self.window)

    def arch(self) -> dict:
        """The registers as a dict (x, f, pc, fflags, frm)."""
        v = _ARCH.unpack(self.regs)
        return {"x": list(v[0:32]), "f": list(v[32:64]), "pc": v[64], "fflags": v[65],
                "frm": v[66]}

    def state(self) -> State:
        """The state as ``runtime/oracle/deviations.py`` compares it (the memory is the
        whole window; how the run ended, without the instruction count)."""
        v = _ARCH.unpack(self.regs)
        e = self.exit
        return State(v[0:32], v[32:64], v[64], v[65], v[66],
                     (self.res[1], self.res[2]) if self.res else (), self.window,
                     trap_of_exit(e[0], e[2], e[3], e[4]))

    @staticmethod
    def of_state(s: State, executed: int = 0) -> "Snap":
        """A snapshot of a retired state (how to go on from a repaired one)."""
        return Snap(_ARCH.pack(*s.x, *s.f, s.pc, s.fflags, s.frm),
                    (1, *s.res) if s.res else (), (EXIT_BUDGET, executed, 0, 0, 0), s.mem)

    @property
    def pc(self) -> int:
        return _ARCH.unpack_from(self.regs)[64]

    @property
    def executed(self) -> int:
        return self.exit[1]

    def with_regs(self, arch: dict) -> "Snap":
        regs = _ARCH.pack(*arch["x"], *arch["f"], arch["pc"], arch["fflags"], arch["frm"])
        return Snap(regs, self.res, self.exit, self.window)


def exit_text(e: tuple) -> str:
    reason, n, kind, addr, word = e
    s = f"{EXIT_NAMES.get(reason, reason)} after {n}"
    if reason == EXIT_FAULT:
        s += f" ({FAULT_NAMES.get(kind, kind)} fault at {addr:#x})"
    if reason == EXIT_ILLEGAL:
        s += f" (word {word:#x})"
    return s


@dataclass
class Difference:
    """One differing item between two snapshots."""

    what: str            # "pc", "x5 (t0)", "f3 (ft3)", "fflags", "frm", "reservation",
                         # "exit", "memory 0x80010"
    kind: str            # pc, x, f, fflags, frm, reservation, exit, memory
    a: object
    b: object

    def show(self, ea: str, eb: str) -> str:
        def fmt(v):
            return f"{v:#018x}" if isinstance(v, int) else str(v)
        return f"{self.what}: {ea} {fmt(self.a)}, {eb} {fmt(self.b)}"

    def to_json(self) -> dict:
        def j(v):
            return f"{v:#x}" if isinstance(v, int) else v
        return {"what": self.what, "kind": self.kind, "values": [j(self.a), j(self.b)]}


def differences(a: Snap, b: Snap) -> list[Difference]:
    out: list[Difference] = []
    if a.exit != b.exit:
        out.append(Difference("exit", "exit", exit_text(a.exit), exit_text(b.exit)))
    if a.regs != b.regs:
        va, vb = _ARCH.unpack(a.regs), _ARCH.unpack(b.regs)
        if va[64] != vb[64]:
            out.append(Difference("pc", "pc", va[64], vb[64]))
        for i in range(32):
            if va[i] != vb[i]:
                out.append(Difference(f"x{i} ({X_NAMES[i]})", "x", va[i], vb[i]))
        for i in range(32):
            if va[32 + i] != vb[32 + i]:
                out.append(Difference(f"f{i} ({F_NAMES[i]})", "f", va[32 + i], vb[32 + i]))
        if va[65] != vb[65]:
            out.append(Difference("fflags", "fflags", va[65], vb[65]))
        if va[66] != vb[66]:
            out.append(Difference("frm", "frm", va[66], vb[66]))
    if a.res != b.res:
        out.append(Difference("reservation", "reservation", str(a.res), str(b.res)))
    if a.window != b.window:
        wa, wb = a.window, b.window
        shown = 0
        for off in range(0, len(wa), 8):
            if wa[off:off + 8] != wb[off:off + 8]:
                if shown < 4:
                    out.append(Difference(f"memory {DATA_BASE + off:#x}", "memory",
                                          int.from_bytes(wa[off:off + 8], "little"),
                                          int.from_bytes(wb[off:off + 8], "little")))
                shown += 1
        if shown > 4:
            out.append(Difference(f"memory ({shown - 4} more words)", "memory", "...", "..."))
    return out


class EngineCrash(Exception):
    """An accelerator raised instead of returning an exit (a bug worth a reproducer)."""

    def __init__(self, engine: str, exc: BaseException) -> None:
        super().__init__(f"{engine} raised {type(exc).__name__}: {exc}")
        self.engine = engine
        self.exc = exc

    @property
    def cls(self) -> str:
        return f"crash:{self.engine}:{type(self.exc).__name__}"


class Engine:
    """One accelerator on a reusable bare machine."""

    def __init__(self, name: str, code_size: int = CODE_SIZE, window: int = WINDOW,
                 options: dict | None = None) -> None:
        self.name = name
        self.window = window
        self.options = dict(options or {})
        # no persistent translation cache: fuzz code is new every time
        try:
            self.m = BareMachine(bytes(code_size), accel=name, data_size=window,
                                 config=RunConfig(accel=name, cache=False, **self.options))
        except ImportError as e:
            raise DbtError(f"accelerator {name} is not available here ({e})") from None
        self.cpu = self.m.cpu
        self.accel = self.m.accel
        self.mem = self.m.mem
        self.code_size = code_size
        self.runs = 0
        self._batch_translate = getattr(self.accel, "translate_many", None)

    def close(self) -> None:
        self.m.close()

    # ---- code ----------------------------------------------------------------------------
    def load_code(self, code: bytes, base: int = CODE_BASE) -> None:
        """Write code into the code region (drops translations of the pages written)."""
        if base < CODE_BASE or base + len(code) > CODE_BASE + self.code_size:
            raise ValueError("code outside the code region")
        self.mem.poke(base, code)

    def prepare(self, pcs: list[int]) -> None:
        """Translate ahead (llvm: one module for a whole batch) when the engine can."""
        if self._batch_translate is not None and pcs:
            try:
                self._batch_translate(pcs)
            except Exception:            # noqa: BLE001 - the case that needs it will crash
                log.info("%s: translating ahead failed; translating lazily", self.name,
                         exc_info=True)

    # ---- state ---------------------------------------------------------------------------
    def set_case(self, c: Case, pc: int) -> None:
        if len(c.mem) != self.window:
            raise ValueError(f"case window of {len(c.mem)} bytes on an engine with {self.window}")
        self.set_snap(initial_snap(c, pc))

    def set_snap(self, s: Snap) -> None:
        ctypes.memmove(ctypes.addressof(self.cpu), s.regs, _ARCH_BYTES)
        self.cpu.res_valid, self.cpu.res_addr, self.cpu.res_val = s.res if s.res else (0, 0, 0)
        self.m.instret = 0
        self.mem.poke(DATA_BASE, s.window)

    def run(self, budget: int) -> Snap:
        self.runs += 1
        try:
            ex = self.accel.run(budget)
        except Exception as e:           # noqa: BLE001 - an engine failing is a finding
            raise EngineCrash(self.name, e) from e
        cpu = self.cpu
        reason = ex.reason
        e = (reason, ex.executed, ex.fault_kind if reason == EXIT_FAULT else 0,
             ex.fault_addr if reason == EXIT_FAULT else 0,
             ex.word if reason == EXIT_ILLEGAL else 0)
        res = (1, cpu.res_addr, cpu.res_val) if cpu.res_valid else ()
        return Snap(ctypes.string_at(ctypes.addressof(cpu), _ARCH_BYTES), res, e,
                    self.mem.peek(DATA_BASE, self.window))

    def run_case(self, c: Case, pc: int, budget: int | None = None) -> Snap:
        self.set_case(c, pc)
        return self.run(c.budget if budget is None else budget)

    def run_from(self, s: Snap, budget: int) -> Snap:
        self.set_snap(s)
        return self.run(budget)

    def insn_at(self, pc: int) -> Insn | None:
        try:
            lo = int.from_bytes(self.mem.peek(pc, 2), "little")
            w = lo if lo & 3 != 3 else int.from_bytes(self.mem.peek(pc, 4), "little")
        except GuestFault:
            return None
        return decode(w)


def initial_snap(c: Case, pc: int) -> Snap:
    """The case's start state as a snapshot (both engines start from it)."""
    regs = _ARCH.pack(*[0] + list(c.x[1:32]), *c.f, pc, c.fcsr & 0x1F, (c.fcsr >> 5) & 7)
    res = (1, c.res[1], c.res[2]) if c.res[0] else ()
    return Snap(regs, res, (EXIT_BUDGET, 0, 0, 0, 0), bytes(c.mem))


# ---- narrowing ----------------------------------------------------------------------------

@dataclass
class Step:
    """The first instruction after which two engines disagree."""

    executed: int                 # instructions before it (from the case's start)
    pc: int
    insn: Insn
    before: Snap
    after_a: Snap
    after_b: Snap
    diffs: list[Difference]
    deviation: str | None = None  # the known deviation that accounts for it, if any
    rule: str = ""


@dataclass
class Verdict:
    """The outcome of comparing one case on a pair of engines."""

    ok: bool
    excused: list[tuple[str, int, str]] = field(default_factory=list)  # (deviation, pc, mnem)
    step: Step | None = None
    final_diffs: list[Difference] = field(default_factory=list)
    probes: int = 0
    crash: str = ""                  # an engine raised: "engine raised Type: message"
    crash_cls: str = ""

    @property
    def cls(self) -> str:
        """The divergence class: the known deviation the first differing instruction meets,
        or its mnemonic and what differs (or crash:ENGINE:EXCEPTION)."""
        if self.ok:
            return "ok"
        if self.crash_cls:
            return self.crash_cls
        st = self.step
        if st is None:
            return "nondeterministic"
        if st.deviation:
            return st.deviation
        kinds = sorted({d.kind for d in st.diffs})
        return f"{st.insn.mnemonic}:{','.join(kinds)}"


def oracle_side(a: str, b: str) -> int | None:
    """Which engine of a pair is the oracle whose known deviations may be excused
    (0 or 1), or None."""
    if b == "unicorn" and a != "unicorn":
        return 1
    if a == "unicorn" and b != "unicorn":
        return 0
    return None


def trace(e: Engine, start: Snap, n: int) -> list[Snap]:
    """``e``'s state after 0..n instructions from ``start``, by single steps (cheap on the
    interpreter; the window is re-read only after a step that wrote memory; a stopped run
    repeats its last state)."""
    e.set_snap(start)
    mem = e.mem
    log = mem.write_log
    if log is None:
        log = mem.write_log = set()
    out = [start]
    window = start.window
    done = 0
    addr = ctypes.addressof(e.cpu)
    for _ in range(n):
        log.clear()
        try:
            ex = e.accel.run(1)
        except Exception as exc:         # noqa: BLE001 - as in Engine.run
            mem.write_log = None
            raise EngineCrash(e.name, exc) from exc
        if log:
            window = mem.peek(DATA_BASE, len(window))
        cpu = e.cpu
        res = (1, cpu.res_addr, cpu.res_val) if cpu.res_valid else ()
        regs = ctypes.string_at(addr, _ARCH_BYTES)
        if ex.reason != EXIT_BUDGET:
            r = ex.reason
            last = Snap(regs, res, (r, done, ex.fault_kind if r == EXIT_FAULT else 0,
                                    ex.fault_addr if r == EXIT_FAULT else 0,
                                    ex.word if r == EXIT_ILLEGAL else 0), window)
            out += [last] * (n + 1 - len(out))
            break
        done += 1
        out.append(Snap(regs, res, (EXIT_BUDGET, done, 0, 0, 0), window))
    mem.write_log = None
    return out


def _prone(insn: Insn | None, before: Snap) -> bool:
    """Can this instruction meet a known oracle deviation from this state
    (``deviations.may_deviate``)? Narrowing probes these one by one; a deviation anywhere
    else is still found (by bisection), only more slowly."""
    if insn is not None and insn.name.startswith(("fm", "fnm")):
        return may_deviate(insn, before.state())      # fmin/fmax.d and fma: by operands
    return may_deviate(insn)


def _shift(s: Snap, k: int) -> Snap:
    """``s`` with its instruction count moved by ``k`` (runs from a later snapshot)."""
    if not k:
        return s
    e = s.exit
    return Snap(s.regs, s.res, (e[0], e[1] + k) + e[2:], s.window)


class _Narrowing:
    """State of one narrowing: the verdict being built, and how a step is judged."""

    def __init__(self, ea: Engine, eb: Engine, known: bool, deviations: bool) -> None:
        self.ea, self.eb, self.known = ea, eb, known
        self.side = oracle_side(ea.name, eb.name) if deviations else None
        self.v = Verdict(True)

    def judge(self, executed: int, before: Snap, pa: Snap, pb: Snap
              ) -> tuple[bool, bool, Snap | None]:
        """The engines agree before an instruction and differ after it: is it a known
        deviation (``runtime/oracle/deviations.explain``)? Returns (excused, the case is
        over for the reference, the oracle's repaired state)."""
        v, side = self.v, self.side
        insn = self.ea.insn_at(before.pc)
        step = Step(executed, before.pc, insn, before, pa, pb, differences(pa, pb))
        ref, orc = (pa, pb) if side == 1 else (pb, pa)
        dev = None
        if side is not None and insn is not None:
            rs, os_ = ref.state(), orc.state()
            dev = explain(insn, before.state(), rs, os_)
        if dev is not None:
            step.deviation, step.rule = dev.name, dev.rule
        if dev is None or not self.known:
            v.ok, v.step = False, step
            return False, True, None
        v.excused.append((dev.name, before.pc, insn.mnemonic))
        over = dev.ends_run or ref.exit[0] != EXIT_BUDGET
        return True, over, None if over else Snap.of_state(repair(dev, rs, os_),
                                                           ref.executed)


def narrow(c: Case, pc: int, ea: Engine, eb: Engine, known: bool,
           deviations: bool = True,
           finals: tuple[Snap, Snap] | None = None) -> Verdict:
    """Find the first instruction where ``ea`` and ``eb`` disagree on case ``c`` (laid out
    at ``pc``); ``finals``: their end states if already known.

    Where the difference is exactly a known deviation of the oracle
    (``runtime/oracle/deviations.explain``, and ``known``): it is counted, the oracle's
    state is repaired (``deviations.repair``) and the search goes on from there to the end
    of the case. ``deviations=False`` names no deviations at all.

    When one engine is the interpreter, its trajectory is recorded once by single steps
    and the other engine is compared with it at every instruction that can meet a known
    deviation (before and after it) and at the end; a difference elsewhere is bisected.
    Otherwise the instruction count is bisected with both engines restarting from the
    same snapshot with exact budgets."""
    n = _Narrowing(ea, eb, known, deviations)
    if ea.name == "interp" or eb.name == "interp":
        _narrow_traced(c, pc, n, ea if ea.name == "interp" else eb, finals)
    else:
        _narrow_bisect(c, pc, n, finals)
    return n.v


def _narrow_traced(c: Case, pc: int, n: _Narrowing, tracer: Engine,
                   finals: tuple[Snap, Snap] | None) -> None:
    v = n.v
    other = n.eb if tracer is n.ea else n.ea
    t_first = tracer is n.ea
    tr = trace(tracer, initial_snap(c, pc), c.budget)
    budget = len(tr) - 1
    stop = min(tr[-1].executed, budget - 1)      # the last instruction the tracer reaches
    # (tr[stop + 1] is the end state: the budget spent, or the exit at instruction stop)

    def pair(k: int, so: Snap) -> tuple[Snap, Snap]:
        return (tr[k], so) if t_first else (so, tr[k])

    def probe(frm: int, state: Snap, k: int) -> Snap:
        """The other engine from ``state`` (its state after ``frm`` instructions) to k."""
        v.probes += 1
        return _shift(other.run_from(state, k - frm), frm)

    pos = [0, tr[0]]                 # the other engine is known to equal tr[pos[0]]

    def advance(target: int, first: int = -1) -> str:
        """Bring the other engine to ``target`` instructions, judging every difference on
        the way ('first': where to look first): 'ok', 'fail' (a divergence) or 'over'
        (the reference stopped)."""
        while pos[0] < target:
            cur, state = pos
            so = probe(cur, state, target)
            if so.key() == tr[target].key():
                pos[:] = [target, tr[target]]
                return "ok" if tr[target].exit[0] == EXIT_BUDGET else "over"
            lo, lo_state, hi, hi_snap = cur, state, target, so
            while hi - lo > 1:
                mid = first if lo < first < hi else (lo + hi) // 2
                sm = probe(lo, lo_state, mid)
                if sm.key() == tr[mid].key():
                    lo, lo_state = mid, sm
                else:
                    hi, hi_snap = mid, sm
            ok, over, fixed = n.judge(lo, tr[lo], *pair(hi, hi_snap))
            if not ok:
                v.final_diffs = differences(*(finals or pair(budget, probe(0, tr[0], budget))))
                return "fail"
            if over or tr[hi].exit[0] != EXIT_BUDGET:
                return "over"
            pos[:] = [hi, fixed]         # the repaired oracle goes on from here
        return "ok"

    for k in range(stop + 1):
        if k < pos[0] or not _prone(tracer.insn_at(tr[k].pc), tr[k]):
            continue
        if advance(k + 1, first=k) != "ok":       # one probe when it does not deviate
            return
    advance(stop + 1)


def _narrow_bisect(c: Case, pc: int, n: _Narrowing,
                   finals: tuple[Snap, Snap] | None) -> None:
    v, ea, eb = n.v, n.ea, n.eb
    start = initial_snap(c, pc)
    offset = 0
    while True:
        left = c.budget - offset
        if finals is not None and offset == 0:
            fa, fb = finals
        else:
            fa, fb = ea.run_from(start, left), eb.run_from(start, left)
            v.probes += 1
        if fa.key() == fb.key():
            return
        hi = min(left, max(fa.executed, fb.executed) + 1)
        pa, pb = ea.run_from(start, hi), eb.run_from(start, hi)
        v.probes += 1
        if pa.key() == pb.key():            # the full runs differ, the same run does not
            v.ok, v.final_diffs = False, differences(fa, fb)
            return
        lo, before = 0, start
        while hi - lo > 1:
            mid = (lo + hi) // 2
            ma, mb = ea.run_from(start, mid), eb.run_from(start, mid)
            v.probes += 1
            if ma.key() == mb.key():
                lo, before = mid, ma
            else:
                hi, pa, pb = mid, ma, mb
        ok, over, fixed = n.judge(offset + lo, before, pa, pb)
        if not ok:
            v.final_diffs = differences(fa, fb)
            return
        if over:
            return                          # the reference stopped here: the case is over
        start = Snap(fixed.regs, fixed.res, (EXIT_BUDGET, 0, 0, 0, 0), fixed.window)
        offset += hi
