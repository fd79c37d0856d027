"""Every switch that changes how dbtlab runs a guest, in one place.

The CLI fills a ``RunConfig`` from its options; the Python API takes one too. Debug
switches follow QEMU's ``-d`` names where QEMU has one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

#: ``-d`` flags: name -> what it does
DEBUG_FLAGS = {
    "in_asm": "print the guest instructions of each translated block",
    "op": "print the LLVM IR of each translated module",
    "op_opt": "print the LLVM IR after optimisation",
    "out_asm": "print the host assembly of each translated module",
    "nochain": "never chain blocks: every block exit returns to the dispatcher",
    "exits": "report every exit from translated code to Python (syscalls, misses, ...)",
    "perfmap": "write /tmp/perf-PID.map so `perf report` names translated blocks",
}

ACCELS = ("llvm", "interp", "unicorn")
#: translation tiers of the llvm accelerator, cheapest first: ``stencil`` (copy and patch,
#: microseconds per block), ``llvm`` (LLVM per block: what stencils cannot serve, and what
#: profiling, the write log and -d nochain need), ``region`` (hot loops, optimised)
TIERS = ("stencil", "llvm", "region")
DEFAULT_TIERS = TIERS
DEFAULT_REGION_THRESHOLD = 2000      # executions of a loop head before it becomes a region


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


@dataclass
class RunConfig:
    accel: str = "interp"
    strace: bool = False
    max_insns: int | None = None          # stop after exactly this many instructions
    debug: frozenset[str] = frozenset()   # subset of DEBUG_FLAGS
    debug_file: str | None = None         # where -d output goes (default stderr)
    opt_level: int = 0                    # LLVM pass level for first-tier code (0..3)
    codegen_opt: int = 0                  # LLVM target-machine opt level (0..3)
    batch_blocks: int = 16                # blocks translated per module on a miss
    max_block_insns: int = 128            # longest translation block
    chaining: bool = True
    time_mode: str = "host"               # "host" clocks, or "virtual" (deterministic)
    profile: bool = False                 # count block executions and transitions (llvm)
    # executions that make a block hot (0: no regions); DBTLAB_REGIONS sets the default so
    # that the whole test suite can run with regions off, at a threshold, or at 1
    region_threshold: int = field(
        default_factory=lambda: _env_int("DBTLAB_REGIONS", DEFAULT_REGION_THRESHOLD))
    region_workers: int = field(default_factory=lambda: _env_int("DBTLAB_REGION_WORKERS", 1))
    region_opt: int = 2                   # LLVM pass and codegen level for regions
    # translation tiers (see TIERS); DBTLAB_TIERS sets the default, like DBTLAB_REGIONS
    tiers: tuple[str, ...] = field(default_factory=lambda: _env_tiers())
    cache: bool = True                    # persistent translation cache (object code)
    cache_dir: str | None = None          # default: $DBTLAB_CACHE_DIR or ~/.cache/dbtlab
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_env(cls, **kw) -> "RunConfig":
        """Defaults overridable from DBTLAB_* environment variables (for debugging runs
        started by tests or notebooks): DBTLAB_ACCEL, DBTLAB_DEBUG=in_asm,op, DBTLAB_OPT."""
        cfg = cls(**kw)
        if "accel" not in kw and os.environ.get("DBTLAB_ACCEL"):
            cfg.accel = os.environ["DBTLAB_ACCEL"]
        if os.environ.get("DBTLAB_DEBUG"):
            cfg.debug = cfg.debug | parse_debug(os.environ["DBTLAB_DEBUG"])
        if os.environ.get("DBTLAB_OPT"):
            cfg.opt_level = int(os.environ["DBTLAB_OPT"])
        return cfg

    @property
    def chain(self) -> bool:
        return self.chaining and "nochain" not in self.debug

    @property
    def regions(self) -> int:
        """The region threshold in force (0: no regions)."""
        return self.region_threshold if "region" in self.tiers else 0


def _env_tiers() -> tuple[str, ...]:
    text = os.environ.get("DBTLAB_TIERS")
    if not text:
        return DEFAULT_TIERS
    try:
        return parse_tiers(text)
    except ValueError as e:
        from dbtlab.runtime.errors import DbtError
        raise DbtError(f"DBTLAB_TIERS: {e}") from None


def parse_tiers(text: str) -> tuple[str, ...]:
    """``stencil,llvm,region`` and subsets; unknown names raise ValueError listing the
    valid ones. Whatever the list, the LLVM tier still translates what the stencil tier
    cannot (a form without a stencil, a budget-limited block)."""
    tiers = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    bad = [t for t in tiers if t not in TIERS]
    if bad or not tiers:
        raise ValueError(f"unknown tier(s) {', '.join(bad) or '(none)'}; valid: "
                         + ", ".join(TIERS))
    if "region" in tiers and len(tiers) == 1:
        raise ValueError("tiers: regions form over a first tier: add stencil or llvm")
    return tiers


def parse_debug(text: str) -> frozenset[str]:
    """Parse ``-d`` flags; unknown names raise ValueError listing the valid ones."""
    flags = frozenset(t.strip() for t in text.split(",") if t.strip())
    bad = flags - DEBUG_FLAGS.keys()
    if bad:
        raise ValueError(f"unknown -d flag(s) {', '.join(sorted(bad))}; valid: "
                         + ", ".join(DEBUG_FLAGS))
    return flags
