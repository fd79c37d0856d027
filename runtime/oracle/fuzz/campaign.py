"""Fuzz campaigns: workers, batching, verdicts, minimisation, the summary.

Case ``i`` of campaign ``seed`` is a pure function of (seed, i, weights), so workers
generate their own cases and a divergence is identified by its seed and index. Each worker
process keeps one :class:`Session` — an :class:`Engine` per accelerator — for the whole
campaign; cases are placed in the code region a batch at a time (one code write, and for
llvm one translation module per batch, when the accelerator offers ``translate_many``).

Per case, every engine runs from the same initial state to the case's end (the terminating
``ecall``, a fault, an illegal instruction, or the budget); the final snapshots are compared
against the reference engine (the first one that is not the oracle). Only when they differ
is the case narrowed (``runner.narrow``). Single-stepping the llvm engine would translate a
truncated block per probe, so for an llvm/unicorn pair the interpreter stands in for llvm
while narrowing *if* its final state is identical to llvm's: the oracle's differences are
then attributed to single instructions on the interpreter's trajectory; if anything is left
unexplained, the real pair is narrowed for the report.

Workers are separate processes started with the ``spawn`` method (a forked child of a
process that has initialised LLVM is not safe).
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
import sys
import time
from dataclasses import dataclass, field

from dbtlab.runtime.oracle.bare import CODE_BASE
from dbtlab.runtime.config import ACCELS, RunConfig
from dbtlab.runtime.errors import DbtError
from dbtlab.runtime.oracle.fuzz.case import WINDOW, Case, Layout
from dbtlab.runtime.oracle.fuzz.generator import DEFAULT_WEIGHTS, Generator
from dbtlab.runtime.oracle.fuzz.minimize import minimise
from dbtlab.runtime.oracle.fuzz.report import (read_reproducer, reproducer, verdict_text,
                                        write_reproducer)
from dbtlab.runtime.oracle.fuzz.runner import (CODE_SIZE, Engine, EngineCrash, Snap, Verdict,
                                        initial_snap, narrow)

log = logging.getLogger(__name__)

#: llvm's MCJIT gets slower with every module it holds: start a fresh one after this many
LLVM_FLUSH_MODULES = 48


@dataclass
class FuzzConfig:
    seed: int = 0
    cases: int = 1000
    accels: tuple[str, ...] = ("llvm", "unicorn")
    jobs: int = 1
    known_deviations: bool = True
    weights: dict[str, float] | None = None
    out: str | None = "fuzz-out"
    chunk: int = 200                  # cases per work unit
    minimise: bool = True
    max_minimise: int = 12            # divergences minimised per worker (new classes only)
    progress: bool = False
    min_items: int = 6
    max_items: int = 24
    llvm_regions: int = 0             # >0: llvm forms second-tier regions at this threshold
    tiers: tuple[str, ...] | None = None   # llvm's first tiers (default: RunConfig's)

    def engine_options(self) -> dict[str, dict]:
        """RunConfig settings per accelerator (recorded in reproducers)."""
        first = [t for t in (self.tiers or RunConfig().tiers) if t != "region"]
        if self.llvm_regions:
            return {"llvm": {"region_threshold": self.llvm_regions, "region_workers": 0,
                             "tiers": [*first, "region"]}}
        return {"llvm": {"region_threshold": 0, "tiers": first}}

    def check(self) -> None:
        bad = [a for a in self.accels if a not in ACCELS]
        if bad:
            raise DbtError(f"unknown accelerator(s) {', '.join(bad)} "
                           f"(choose from {', '.join(ACCELS)})")
        if len(set(self.accels)) != len(self.accels) or len(self.accels) < 2:
            raise DbtError("fuzzing needs two or more different accelerators "
                           f"(got {','.join(self.accels)})")
        if self.cases < 0 or self.jobs < 1:
            raise DbtError("--cases must be >= 0 and --jobs >= 1")


def reference_of(accels) -> str:
    """The engine others are compared against: the first that is not the oracle."""
    return next((a for a in accels if a != "unicorn"), accels[0])


class Session:
    """The engines of one worker, and the verdict on a case."""

    def __init__(self, accels, known: bool, window: int = WINDOW,
                 options: dict[str, dict] | None = None) -> None:
        self.accels = list(accels)
        self.known = known
        self.ref = reference_of(self.accels)
        self.options = options or {}
        self.engines = {a: Engine(a, window=window, options=self.options.get(a))
                        for a in self.accels}
        self.proxy = None
        if "llvm" in self.accels and "unicorn" in self.accels:
            self.proxy = self.engines.get("interp") or Engine("interp", window=window)
        self._all = list(self.engines.values()) + (
            [self.proxy] if self.proxy is not None and "interp" not in self.engines else [])
        self._llvm_modules = 0

    def close(self) -> None:
        for e in self._all:
            e.close()

    def recover(self, name: str) -> None:
        """A fresh engine after ``name`` raised (its state may be anything now); the
        caller reloads the code."""
        old = self.engines.get(name) or (self.proxy if self.proxy and
                                          self.proxy.name == name else None)
        if old is None:
            return
        try:
            old.close()
        except Exception:            # noqa: BLE001 - it is being replaced
            log.debug("closing a crashed %s engine failed", name, exc_info=True)
        new = Engine(name, window=old.window, options=old.options)
        if name in self.engines:
            self.engines[name] = new
        if self.proxy is old:
            self.proxy = new
        self._all = [new if e is old else e for e in self._all]

    def others(self) -> list[str]:
        return [a for a in self.accels if a != self.ref]

    def load(self, code: bytes, pcs: list[int], base: int = CODE_BASE) -> None:
        for e in self._all:
            e.load_code(code, base)
        for e in self.engines.values():
            if e.name == "llvm":
                st = e.accel.stats
                if st.modules - self._llvm_modules > LLVM_FLUSH_MODULES:
                    e.accel.invalidate_all()
                    self._llvm_modules = st.modules
            e.prepare(pcs)

    def finals(self, c: Case, pc: int) -> dict[str, Snap]:
        s0 = initial_snap(c, pc)
        return {a: e.run_from(s0, c.budget) for a, e in self.engines.items()}

    def verdict(self, c: Case, pc: int, other: str, finals: dict[str, Snap]) -> Verdict:
        ref = self.ref
        fa, fb = finals[ref], finals[other]
        if fa.key() == fb.key():
            return Verdict(True)
        ea, eb = self.engines[ref], self.engines[other]
        if self.proxy is not None and {ref, other} == {"llvm", "unicorn"}:
            if self.proxy.run_from(initial_snap(c, pc), c.budget).key() == \
                    finals["llvm"].key():
                pa, pb = (self.proxy, eb) if ref == "llvm" else (ea, self.proxy)
                v = narrow(c, pc, pa, pb, self.known, finals=(fa, fb))
                if v.ok:
                    return v
        return narrow(c, pc, ea, eb, self.known, finals=(fa, fb))

    def run_alone(self, c: Case, base: int = CODE_BASE) -> dict[str, Verdict]:
        """Load one case at ``base`` and give each non-reference engine's verdict (an
        engine that raises gives a crash verdict and is replaced)."""
        lay, _ = Layout.place([c], base, CODE_BASE + CODE_SIZE - base)
        self.load(lay.code, lay.entries, base)
        try:
            finals = self.finals(c, base)
            return {o: self.verdict(c, base, o, finals) for o in self.others()}
        except EngineCrash as e:
            self.recover(e.engine)
            v = Verdict(False, crash=str(e), crash_cls=e.cls)
            return {o: v for o in self.others()}


@dataclass
class ChunkResult:
    cases: int = 0
    clean: int = 0                   # identical final states
    excused_cases: int = 0           # identical once known deviations were excused
    diverged: int = 0                # cases with an unexplained divergence
    insns: int = 0                   # instructions executed by the reference
    excused: collections.Counter = field(default_factory=collections.Counter)
    classes: collections.Counter = field(default_factory=collections.Counter)
    reproducers: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    probes: int = 0

    def merge(self, o: "ChunkResult") -> None:
        for k in ("cases", "clean", "excused_cases", "diverged", "insns", "seconds", "probes"):
            setattr(self, k, getattr(self, k) + getattr(o, k))
        self.excused.update(o.excused)
        self.classes.update(o.classes)
        self.reproducers.extend(o.reproducers)


class Worker:
    """Runs chunks of a campaign in one process."""

    def __init__(self, cfg: FuzzConfig) -> None:
        self.cfg = cfg
        self.gen = Generator(cfg.weights, cfg.min_items, cfg.max_items)
        self.session = Session(cfg.accels, cfg.known_deviations,
                               options=cfg.engine_options())
        self.minimised: set[str] = set()
        self.documented: set[str] = set()

    def close(self) -> None:
        self.session.close()

    def run_chunk(self, start: int, count: int) -> ChunkResult:
        t0 = time.perf_counter()
        cfg, s = self.cfg, self.session
        res = ChunkResult()
        cases = [self.gen.case(cfg.seed, i) for i in range(start, start + count)]
        found: list[tuple[Case, int, str, Verdict]] = []
        rest = cases
        while rest:
            lay, rest = Layout.place(rest, CODE_BASE, CODE_SIZE)
            s.load(lay.code, lay.entries)
            for c, pc in zip(lay.cases, lay.pcs):
                res.cases += 1
                try:
                    finals = s.finals(c, pc)
                    verdicts = [(o, s.verdict(c, pc, o, finals)) for o in s.others()]
                except EngineCrash as e:
                    log.warning("case %d of seed %d: %s", c.index, c.seed, e)
                    s.recover(e.engine)
                    s.load(lay.code, lay.entries)
                    v = Verdict(False, crash=str(e), crash_cls=e.cls)
                    verdicts = [(o, v) for o in s.others()][:1]
                    finals = None
                if finals is not None:
                    res.insns += finals[s.ref].executed
                clean, bad = True, False
                for o, v in verdicts:
                    res.probes += v.probes
                    for dev, _pc, _m in v.excused:
                        res.excused[dev] += 1
                    if v.excused or not v.ok:
                        clean = False
                    if not v.ok:
                        bad = True
                        res.classes[self.class_key(o, v)] += 1
                        found.append((c, pc, o, v))
                if clean:
                    res.clean += 1
                elif bad:
                    res.diverged += 1
                else:
                    res.excused_cases += 1
        for c, pc, o, v in found:
            key = self.class_key(o, v)
            if key not in self.documented:       # one reproducer per class and worker
                self.documented.add(key)
                res.reproducers.append(self.report(c, pc, o, v))
        res.seconds = time.perf_counter() - t0
        return res

    def class_key(self, other: str, v: Verdict) -> str:
        if len(self.cfg.accels) > 2 and not v.crash_cls:
            return f"{self.session.ref}/{other}: {v.cls}"
        return v.cls

    def report(self, c: Case, pc: int, other: str, v: Verdict) -> dict:
        """The reproducer of a divergence, minimised for the first few classes."""
        pair = (self.session.ref, other)
        key = self.class_key(other, v)
        small, sv, base = c, v, pc
        if self.cfg.minimise and len(self.minimised) < self.cfg.max_minimise:
            self.minimised.add(key)
            m = self.minimise(c, other, v.cls)
            if m is not None:
                small, sv, base = m, self.session.run_alone(m)[other], CODE_BASE
        doc = reproducer(small, pair, sv, self.cfg.known_deviations, original=c, base=base)
        doc["class_key"] = key
        doc["minimised"] = small is not c
        if self.cfg.engine_options():
            doc["engine_options"] = self.cfg.engine_options()
        return doc

    def minimise(self, c: Case, other: str, cls: str) -> Case | None:
        """The minimised case, or None if placed alone at CODE_BASE it does not diverge
        the same way."""
        s = self.session

        def same(d: Case) -> bool:
            v = s.run_alone(d)[other]
            return not v.ok and v.cls == cls
        if not same(c):
            return None
        return minimise(c, same)


# ---- worker processes -------------------------------------------------------------------

_WORKER: Worker | None = None


def _init_worker(cfg: FuzzConfig) -> None:
    global _WORKER
    logging.basicConfig(level=logging.WARNING)
    _WORKER = Worker(cfg)


def _work(unit: tuple[int, int]) -> ChunkResult:
    return _WORKER.run_chunk(*unit)


@dataclass
class CampaignResult:
    cfg: FuzzConfig
    total: ChunkResult
    wall: float
    files: dict[str, str] = field(default_factory=dict)     # class -> reproducer path
    docs: dict[str, dict] = field(default_factory=dict)     # class -> reproducer

    @property
    def ok(self) -> bool:
        return self.total.diverged == 0

    @property
    def cases_per_second(self) -> float:
        return self.total.cases / self.wall if self.wall else 0.0

    @property
    def insns_per_second(self) -> float:
        return self.total.insns / self.wall if self.wall else 0.0

    def summary(self) -> str:
        t, cfg = self.total, self.cfg
        out = [f"fuzz: seed {cfg.seed}, {t.cases} cases on {','.join(cfg.accels)} "
               f"(reference {reference_of(cfg.accels)}) in {self.wall:.1f} s with "
               f"{cfg.jobs} worker{'s' if cfg.jobs > 1 else ''}",
               f"  {self.cases_per_second:.0f} cases/s, {self.insns_per_second:.0f} "
               f"instructions compared/s",
               f"  {t.clean} identical, {t.excused_cases} identical after excusing known "
               f"oracle deviations, {t.diverged} with an unexplained divergence"]
        if not cfg.known_deviations:
            out.append("  known oracle deviations are NOT excused (--no-known-deviations)")
        if cfg.llvm_regions:
            out.append(f"  llvm forms regions from blocks executed {cfg.llvm_regions} times")
        if t.excused:
            out.append("  known oracle deviations hit: " + ", ".join(
                f"{k} {v}" for k, v in t.excused.most_common()))
        if t.classes:
            out.append("  divergences by class:")
            for k, v in t.classes.most_common():
                doc = self.docs.get(k)
                extra = ""
                if doc is not None:
                    n = len(doc["words"])
                    extra = (f"  ({'minimised to ' if doc.get('minimised') else ''}{n} "
                             f"instructions incl. the ecall)")
                    if k in self.files:
                        extra += f" {self.files[k]}"
                out.append(f"    {k}: {v}{extra}")
        else:
            out.append("  no divergence")
        return "\n".join(out)


def _units(cfg: FuzzConfig) -> list[tuple[int, int]]:
    return [(i, min(cfg.chunk, cfg.cases - i)) for i in range(0, cfg.cases, cfg.chunk)]


def run_campaign(cfg: FuzzConfig) -> CampaignResult:
    """Run a campaign (in this process when ``jobs == 1``). With ``jobs > 1`` the workers
    are spawned processes: a script calling this must do so under
    ``if __name__ == "__main__":`` (multiprocessing re-imports the main module)."""
    cfg.check()
    if cfg.weights is None:
        cfg.weights = dict(DEFAULT_WEIGHTS)
    total = ChunkResult()
    t0 = time.perf_counter()
    units = _units(cfg)

    def progress() -> None:
        if cfg.progress:
            dt = time.perf_counter() - t0
            rate = total.cases / dt if dt else 0.0
            sys.stderr.write(f"\rfuzz: {total.cases}/{cfg.cases} cases, {rate:.0f} cases/s, "
                             f"{total.diverged} diverged   ")
            sys.stderr.flush()

    if cfg.jobs == 1:
        w = Worker(cfg)
        try:
            for u in units:
                total.merge(w.run_chunk(*u))
                progress()
        finally:
            w.close()
    else:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(cfg.jobs, initializer=_init_worker, initargs=(cfg,)) as pool:
            for r in pool.imap_unordered(_work, units):
                total.merge(r)
                progress()
    if cfg.progress:
        sys.stderr.write("\n")
    wall = time.perf_counter() - t0
    result = CampaignResult(cfg, total, wall)
    for doc in sorted(total.reproducers, key=lambda d: (len(d["words"]), d.get("index") or 0)):
        result.docs.setdefault(doc["class_key"], doc)
    if cfg.out:
        for k, doc in result.docs.items():
            name = f"{k}-seed{cfg.seed}-case{doc.get('index')}"
            result.files[k] = write_reproducer(doc, cfg.out, name)
    return result


# ---- replay -----------------------------------------------------------------------------

@dataclass
class ReplayResult:
    doc: dict
    case: Case
    engines: tuple[str, str]
    verdict: Verdict
    recorded_class: str | None

    @property
    def ok(self) -> bool:
        return self.verdict.ok

    @property
    def same(self) -> bool:
        """The divergence recorded in the file happened again."""
        return not self.verdict.ok and self.verdict.cls == self.recorded_class

    def report(self) -> str:
        base = int(self.doc.get("code_base", f"{CODE_BASE:#x}"), 16)
        text = verdict_text(self.engines, self.verdict, self.case, base)
        if self.recorded_class:
            if self.same:
                text += f"\nreproduced: the recorded divergence ({self.recorded_class})"
            else:
                text += f"\nNOT the recorded divergence ({self.recorded_class})"
        return text


def replay(path: str, accels: list[str] | None = None,
           known_deviations: bool | None = None) -> ReplayResult:
    """Rerun a reproducer file on its engines (or ``accels``)."""
    doc, case = read_reproducer(path)
    engines = list(accels or doc["engines"])
    diff = doc.get("difference", {})
    known = diff.get("known_deviations", True) if known_deviations is None \
        else known_deviations
    FuzzConfig(accels=tuple(engines)).check()
    base = int(doc.get("code_base", f"{CODE_BASE:#x}"), 16)
    s = Session(engines, known, len(case.mem), options=doc.get("engine_options"))
    try:
        verdicts = s.run_alone(case, base)
    finally:
        s.close()
    other = next((o for o, v in verdicts.items() if not v.ok), next(iter(verdicts)))
    return ReplayResult(doc, case, (reference_of(engines), other), verdicts[other],
                        diff.get("class"))


__all__ = ["FuzzConfig", "CampaignResult", "run_campaign", "replay", "ReplayResult",
           "Session"]
