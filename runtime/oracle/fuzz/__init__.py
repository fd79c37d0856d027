"""Differential fuzzing of the accelerators (``dbtlab fuzz``).

* ``generator`` — random RV64GC instruction streams, weights per instruction class;
* ``case`` — a program and its complete initial state, laid out in the code region;
* ``runner`` — engines reused across cases, final-state comparison, narrowing to the first
  differing instruction (with the oracle's known deviations, ``runtime/oracle/deviations.py``
  — the list difftest uses too —, excused and repaired);
* ``minimize`` — delta debugging that keeps the divergence class;
* ``report`` — reproducer files;
* ``campaign`` — workers, batching, the summary, replay.

Python API::

    from dbtlab.runtime.oracle.fuzz import FuzzConfig, run_campaign, replay
    r = run_campaign(FuzzConfig(seed=1, cases=2000, accels=("interp", "unicorn")))
    print(r.summary()); r.ok
"""

import importlib

_EXPORTS = {"CampaignResult": "campaign", "FuzzConfig": "campaign", "ReplayResult": "campaign",
            "Session": "campaign", "replay": "campaign", "run_campaign": "campaign",
            "Case": "case", "Item": "case", "CLASSES": "generator",
            "DEFAULT_WEIGHTS": "weights", "Generator": "generator",
            "parse_weights": "generator"}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    """Imported on first use: ``dbtlab run`` builds the fuzz command's help without
    loading the fuzzer."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
