"""Translation cost against execution: where the wall time of a profiled run went.

The profile records translation time per module (Python emission + LLVM compilation) and
the run's wall time; execution time here is everything else (translated code, the native
dispatcher, syscalls and other exits to Python). The profile has no finer clock.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from dbtlab.analysis.profile import load


@dataclass
class TranslationSummary:
    wall: float | None            # seconds
    emit: float                   # seconds in Python emitting IR
    compile: float                # seconds in LLVM
    execution: float | None       # wall - emit - compile
    blocks: int                   # blocks translated
    executed_blocks: int          # of which ran at least once
    modules: int
    guest_insns: int              # guest instructions translated
    us_per_block: float           # mean translation cost per block
    median_us_per_block: float    # median over modules of their cost per block
    instret: int
    exits: int                    # exits to Python
    exits_per_second: float | None
    mips: float | None            # guest instructions per second of wall time

    @property
    def translation(self) -> float:
        return self.emit + self.compile

    @property
    def translation_share(self) -> float | None:
        return self.translation / self.wall if self.wall else None


def translation_summary(profile: Any) -> TranslationSummary:
    p = load(profile)
    t = p.translation
    mods = p.modules
    emit = float(t.get("emit_seconds", sum(m.get("emit_us", 0) for m in mods) / 1e6))
    comp = float(t.get("compile_seconds", sum(m.get("compile_us", 0) for m in mods) / 1e6))
    nblocks = int(t.get("blocks", len(p.blocks)))
    per_mod = [(m.get("emit_us", 0) + m.get("compile_us", 0)) / m["blocks"]
               for m in mods if m.get("blocks")]
    exits = sum(p.exits.values())
    wall = p.wall
    return TranslationSummary(
        wall=wall, emit=emit, compile=comp,
        execution=None if wall is None else max(0.0, wall - emit - comp),
        blocks=nblocks, executed_blocks=sum(1 for b in p.blocks if b["count"] > 0),
        modules=int(t.get("modules", len(mods))),
        guest_insns=int(t.get("guest_insns", sum(b["insns"] for b in p.blocks))),
        us_per_block=1e6 * (emit + comp) / nblocks if nblocks else 0.0,
        median_us_per_block=statistics.median(per_mod) if per_mod else 0.0,
        instret=p.instret, exits=exits,
        exits_per_second=exits / wall if wall else None,
        mips=p.instret / wall / 1e6 if wall else None)


def module_table(profile: Any) -> list[dict]:
    """One row per translation module: when, how many blocks, cost per block."""
    rows = []
    for m in load(profile).modules:
        n = m.get("blocks") or 0
        tot = m.get("emit_us", 0.0) + m.get("compile_us", 0.0)
        rows.append({"name": m.get("name"), "at": m.get("at"), "blocks": n,
                     "insns": m.get("insns"), "emit_us": m.get("emit_us", 0.0),
                     "compile_us": m.get("compile_us", 0.0), "total_us": tot,
                     "us_per_block": tot / n if n else 0.0})
    return rows


def translation_timeline(profile: Any) -> tuple[list[float], list[float], list[int]]:
    """(run time in s, cumulative translation time in s, cumulative blocks translated) at
    the end of each module, in order."""
    xs, ys, ns = [], [], []
    acc, nb = 0.0, 0
    for r in sorted(module_table(profile), key=lambda r: r["at"] or 0.0):
        acc += r["total_us"] / 1e6
        nb += r["blocks"]
        xs.append(r["at"] or 0.0)
        ys.append(acc)
        ns.append(nb)
    return xs, ys, ns
