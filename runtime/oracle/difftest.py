"""Lockstep differential testing of whole programs across accelerators.

Every engine runs the same program on its own machine from the identical start state
(same argv, environment, stack, AT_RANDOM bytes, uid/gid, virtual clocks). One *step* runs
each machine to the same instruction count — one block (the block the translator would form
at the current pc) or one instruction — then compares pc, x and f registers, fcsr, the LR/SC
reservation, how the guest ended, and every guest page any engine wrote during the step.

The first engine is the reference. Known deviations of the unicorn oracle from the spec
(``runtime/oracle/deviations.py``, the list the fuzzer uses too) are excused only when their
exact condition holds (``deviations.explain`` on the instruction and the states before and
after it), counted, and repaired in the oracle's state (so later steps stay comparable);
steps whose block contains an instruction that can meet one are taken one instruction at a
time, so each deviation is attributed to exactly one instruction. A deviation at which the
reference's run ends (it trapped where unicorn went on) ends the comparison there.

On the first unexplained divergence, ``difftest`` returns a ``Divergence``: step number, pc,
the step's instructions, each differing register or page with every engine's value, and
the last steps executed.
"""

from __future__ import annotations

import collections
import os
import tempfile
from dataclasses import dataclass, field

from dbtlab.ir.state import EXIT_EBREAK, EXIT_FAULT, EXIT_ILLEGAL, F_NAMES, X_NAMES
from dbtlab.runtime.config import RunConfig
from dbtlab.runtime.linux.loader import StartConfig
from dbtlab.runtime.machine import Machine
from dbtlab.runtime.linux.memory import PAGE_SHIFT, GuestFault
from dbtlab.runtime.oracle.deviations import State, explain, may_deviate, repair, trap_of_exit
from dbtlab.translator.block import form_block
from dbtlab.translator.decode import decode
from dbtlab.translator.insn import Insn

HISTORY = 8


@dataclass
class Difference:
    what: str                         # "x10 (a0)", "f3 (ft3)", "pc", "page 0x3ffffe000"...
    values: dict[str, object]         # engine -> value


@dataclass
class Divergence:
    step: int
    instret: int
    pc: int
    insns: list[tuple[int, str]]      # the step's instructions (pc, disassembly)
    differences: list[Difference]
    history: list[tuple[int, int, str]]   # last steps: (step, pc, where)
    engines: list[str]
    where: str = ""                   # " <symbol+off>" of pc
    deviation: str = ""               # the known deviation it is, when not excused

    def report(self) -> str:
        out = [f"DIVERGENCE at step {self.step} (after {self.instret} instructions), "
               f"block at pc {self.pc:#x}{self.where}:"]
        out += [f"  {pc:#x}:  {text}" for pc, text in self.insns]
        if self.deviation:
            out.append(f"  known oracle deviation {self.deviation} (not excused)")
        width = max(len(e) for e in self.engines)
        for d in self.differences:
            out.append(f"  {d.what}:")
            for e in self.engines:
                v = d.values.get(e)
                shown = f"{v:#018x}" if isinstance(v, int) else str(v)
                out.append(f"    {e:<{width}} {shown}")
        if self.history:
            out.append("  last steps:")
            out += [f"    step {s}: {pc:#x}{where}" for s, pc, where in self.history]
        return "\n".join(out)


@dataclass
class DiffResult:
    engines: list[str]
    steps: int = 0
    instructions: int = 0
    divergence: Divergence | None = None
    excused: collections.Counter = field(default_factory=collections.Counter)
    outputs: dict[str, bytes] = field(default_factory=dict)
    ended: dict[str, tuple] = field(default_factory=dict)
    ended_at: str = ""                # a known deviation that ended the reference's run

    @property
    def ok(self) -> bool:
        return self.divergence is None

    def summary(self) -> str:
        if not self.ok:
            return self.divergence.report()
        s = (f"no divergence: {self.steps} steps, {self.instructions} instructions compared "
             f"across {', '.join(self.engines)}")
        if self.excused:
            s += "\n  excused known oracle deviations: " + ", ".join(
                f"{k} ({v})" for k, v in sorted(self.excused.items()))
        if self.ended_at:
            s += (f"\n  the reference's run ended at known oracle deviation {self.ended_at}"
                  f" (unicorn went on): compared up to there")
        return s


def _disasm(insn: Insn, pc: int) -> str:
    try:
        from dbtlab.translator.disasm import disasm
        return disasm(insn, pc).replace("\t", " ")
    except Exception:       # noqa: BLE001 - the disassembler never decides a verdict
        return insn.mnemonic


class Lockstep:
    """Machines for each engine, stepped together."""

    def __init__(self, program: str, args: list[str], engines: list[str], *,
                 env: list[str] | None = None, start: StartConfig | None = None,
                 config: dict | None = None) -> None:
        self.engines = list(engines)
        if len(set(self.engines)) != len(self.engines) or len(self.engines) < 2:
            raise ValueError("difftest needs at least two different accelerators")
        argv = [program, *args]
        self.start = start or StartConfig(argv=argv, env=list(env or []), exec_path=program,
                                          uid=1000, gid=1000)
        self._outs = {}
        self.machines: dict[str, Machine] = {}
        self.last_exit: dict[str, object] = {}    # each accelerator's last Exit
        for e in self.engines:
            out = tempfile.TemporaryFile()
            self._outs[e] = out
            cfg = RunConfig(accel=e, time_mode="virtual", **(config or {}))
            m = Machine(program, argv, config=cfg, start=self.start, stdout=out.fileno(),
                        stderr=out.fileno())
            m.accel.enable_write_log()
            m.accel.run = self._recording(e, m.accel.run)
            self.machines[e] = m
        self.ref = self.machines[self.engines[0]]

    def _recording(self, engine: str, run):
        """``run`` that remembers its Exit (how an instruction trapped, for the states
        ``deviations.explain`` compares)."""
        def recorded(budget: int):
            ex = run(budget)
            self.last_exit[engine] = ex
            return ex
        return recorded

    def close(self) -> None:
        for m in self.machines.values():
            m.close()
        for f in self._outs.values():
            f.close()

    def output(self, engine: str) -> bytes:
        f = self._outs[engine]
        f.flush()
        os.lseek(f.fileno(), 0, os.SEEK_SET)
        return f.read()

    def step_insns(self, granularity: str) -> list[tuple[int, Insn]]:
        """The instructions the next step will run (decoded from the reference)."""
        pc = self.ref.cpu.pc

        def fetch(a: int) -> Insn:
            lo = int.from_bytes(self.ref.mem.fetch(a, 2), "little")
            w = lo if lo & 3 != 3 else int.from_bytes(self.ref.mem.fetch(a, 4), "little")
            return decode(w)

        try:
            if granularity == "insn":
                return [(pc, fetch(pc))]
            insns = form_block(fetch, pc, 128).insns
        except GuestFault:
            return []
        if any(may_deviate(i) for _, i in insns):
            return insns[:1]
        return insns


def _state(m: Machine) -> dict:
    d = m.cpu.arch()
    d["instret"] = m.instret
    return d


def _ended(res) -> tuple:
    if res is None:
        return ("running",)
    if res.stopped:
        return ("running",)
    return ("exit", res.status) if res.signal is None else ("signal", res.signal)


def difftest(program: str, args: list[str] | tuple = (), engines=("llvm", "unicorn"), *,
             granularity: str = "block", env: list[str] | None = None,
             max_steps: int | None = None, known_deviations: bool = True,
             start: StartConfig | None = None) -> DiffResult:
    """Run ``program`` under every engine in lockstep; see the module docstring."""
    if granularity not in ("block", "insn"):
        raise ValueError("granularity must be 'block' or 'insn'")
    ls = Lockstep(program, list(args), list(engines), env=env, start=start)
    result = DiffResult(list(engines))
    history: collections.deque = collections.deque(maxlen=HISTORY)
    try:
        while max_steps is None or result.steps < max_steps:
            ref = ls.ref
            pc = ref.cpu.pc
            insns = ls.step_insns(granularity)
            n = max(1, len(insns))
            before = _state(ref)
            target = ref.instret + n
            ends = {}
            for e, m in ls.machines.items():
                ends[e] = None if m.exited else _ended(m.run(stop_at=target))
            result.steps += 1
            written = set()
            for m in ls.machines.values():
                written |= m.accel.take_written_pages()
            diffs = _compare(ls, ends, written)
            dev = None
            if diffs and len(insns) == 1:
                diffs, dev = _excuse(ls, insns[0][1], before, ends, written, diffs, result,
                                     known_deviations)
            where = ref.where_symbol(pc)[len(f"{pc:#x}"):]
            history.append((result.steps, pc, where))
            if diffs:
                result.divergence = Divergence(
                    result.steps, before["instret"], pc,
                    [(a, _disasm(i, a)) for a, i in insns], diffs, list(history)[:-1],
                    list(engines), where, dev.name if dev is not None else "")
                break
            if dev is not None:                   # excused, and the reference's run ended
                result.ended_at = dev.name
                result.instructions = ref.instret
                break
            result.instructions = ref.instret
            if all(m.exited for m in ls.machines.values()) or \
                    all(v not in (None, ("running",)) for v in ends.values()):
                break
        result.outputs = {e: ls.output(e) for e in engines}
        result.ended = {e: (m.proc.exit_status, m.proc.killed_by)
                        for e, m in ls.machines.items()}
        if result.ok and len(set(result.outputs.values())) > 1:
            result.divergence = Divergence(
                result.steps, ls.ref.instret, ls.ref.cpu.pc, [],
                [Difference("guest output", {e: f"{len(o)} bytes, sha "
                                             f"{hash(o) & 0xFFFFFFFF:08x}"
                                             for e, o in result.outputs.items()})],
                list(history), list(engines))
        return result
    finally:
        ls.close()


def _compare(ls: Lockstep, ends: dict, written: set[int],
             engines: list[str] | None = None) -> list[Difference]:
    engines = engines or ls.engines
    states = {e: _state(ls.machines[e]) for e in engines}
    ref = states[engines[0]]
    diffs: list[Difference] = []

    def check(what: str, get) -> None:
        vals = {e: get(states[e]) for e in engines}
        if len(set(map(repr, vals.values()))) > 1:
            diffs.append(Difference(what, vals))

    if len({repr(ends[e]) for e in engines}) > 1:
        diffs.append(Difference("end of run", {e: ends[e] for e in engines}))
    check("instructions retired", lambda s: s["instret"])
    check("pc", lambda s: s["pc"])
    for i in range(1, 32):
        if any(states[e]["x"][i] != ref["x"][i] for e in engines):
            check(f"x{i} ({X_NAMES[i]})", lambda s, i=i: s["x"][i])
    for i in range(32):
        if any(states[e]["f"][i] != ref["f"][i] for e in engines):
            check(f"f{i} ({F_NAMES[i]})", lambda s, i=i: s["f"][i])
    check("fflags", lambda s: s["fflags"])
    check("frm", lambda s: s["frm"])
    check("reservation", lambda s: (s["res_valid"], s["res_addr"] if s["res_valid"] else 0))
    for pn in sorted(written):
        pages = {e: _page(ls.machines[e], pn) for e in engines}
        if len(set(pages.values())) > 1:
            first = pages[engines[0]]
            off = next((i for i in range(4096) if any(
                (p[i] if p else None) != (first[i] if first else None)
                for p in pages.values())), 0)
            addr = (pn << PAGE_SHIFT) + off
            diffs.append(Difference(
                f"memory at {addr:#x}",
                {e: (int.from_bytes(p[off & ~7:(off & ~7) + 8], "little") if p else "unmapped")
                 for e, p in pages.items()}))
    return diffs


def _page(m: Machine, pn: int) -> bytes | None:
    try:
        return bytes(m.mem.page_bytes(pn))
    except KeyError:
        return None


# ---- known deviations ---------------------------------------------------------------------

def _dev_state(m: Machine, mem=None, trap=None) -> State:
    c = m.cpu
    x = list(c.x)
    x[0] = 0
    return State(tuple(x), tuple(c.f), c.pc, c.fflags, c.frm,
                 (c.res_addr, c.res_val) if c.res_valid else (), mem, trap)


def _after(ls: Lockstep, e: str, end, pages: list[int]) -> State:
    """Engine ``e``'s state after a one-instruction step as ``deviations`` compares it:
    the memory is the pages any engine wrote in the step; the trap, how its run ended."""
    trap = None
    if end is None:
        trap = ("exited",)                 # it had ended before the step
    elif end != ("running",):
        ex = ls.last_exit.get(e)
        if end[0] == "signal" and ex is not None and \
                ex.reason in (EXIT_FAULT, EXIT_ILLEGAL, EXIT_EBREAK):
            trap = trap_of_exit(ex.reason, ex.fault_kind, ex.fault_addr, ex.word)
        else:
            trap = end
    m = ls.machines[e]
    return _dev_state(m, tuple(_page(m, pn) for pn in pages), trap)


def _set_state(m: Machine, s: State) -> None:
    c = m.cpu
    for i in range(1, 32):
        c.x[i] = s.x[i]
    for i in range(32):
        c.f[i] = s.f[i]
    c.pc, c.fflags, c.frm = s.pc, s.fflags, s.frm
    c.res_valid = 1 if s.res else 0
    if s.res:
        c.res_addr, c.res_val = s.res


def _excuse(ls: Lockstep, insn: Insn, before: dict, ends: dict, written: set[int],
            diffs: list[Difference], result: DiffResult, known: bool):
    """Ask ``deviations.explain`` about each unicorn engine that differs from the
    reference after this one instruction. Returns the differences left and the deviation
    that accounts for them (when ``known``: excused — counted, the oracle's state
    repaired — or, for a deviation that ends the reference's run, that deviation)."""
    engines = ls.engines
    pages = sorted(written)
    b = State(tuple(before["x"]), tuple(before["f"]), before["pc"], before["fflags"],
              before["frm"], (before["res_addr"], before["res_val"]) if before["res_valid"]
              else ())
    ref_after = _after(ls, engines[0], ends[engines[0]], pages)
    found, ended = None, []
    for e in engines[1:]:
        if e != "unicorn":
            continue
        after = _after(ls, e, ends[e], pages)
        if after == ref_after:
            continue
        dev = explain(insn, b, ref_after, after)
        if dev is None:
            return diffs, None
        found = dev
        if not known:
            continue
        result.excused[dev.name] += 1
        if dev.ends_run:
            ended.append(e)
        else:
            _set_state(ls.machines[e], repair(dev, ref_after, after))
            ends[e] = ends[engines[0]]
    if not known or found is None:
        return diffs, found
    rest = _compare(ls, ends, written, [e for e in engines if e not in ended])
    return rest, (found if ended and not rest else None)
