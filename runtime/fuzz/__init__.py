"""Differential fuzzing of the accelerators (``dbtlab fuzz``).

* ``generator`` — random RV64GC instruction streams, weights per instruction class;
* ``case`` — a program and its complete initial state, laid out in the code region;
* ``runner`` — engines reused across cases, final-state comparison, narrowing to the first
  differing instruction (with the oracle's known deviations excused and repaired);
* ``oracle`` — unicorn deviations found by the fuzzer that ``runtime.deviations`` lacks;
* ``minimize`` — delta debugging that keeps the divergence class;
* ``report`` — reproducer files;
* ``campaign`` — workers, batching, the summary, replay.

Python API::

    from dbtlab.runtime.fuzz import FuzzConfig, run_campaign, replay
    r = run_campaign(FuzzConfig(seed=1, cases=2000, accels=("interp", "unicorn")))
    print(r.summary()); r.ok
"""

from dbtlab.runtime.fuzz.campaign import (CampaignResult, FuzzConfig, ReplayResult, Session,
                                          replay, run_campaign)
from dbtlab.runtime.fuzz.case import Case, Item
from dbtlab.runtime.fuzz.generator import CLASSES, DEFAULT_WEIGHTS, Generator, parse_weights

__all__ = ["CampaignResult", "FuzzConfig", "ReplayResult", "Session", "replay",
           "run_campaign", "Case", "Item", "CLASSES", "DEFAULT_WEIGHTS", "Generator",
           "parse_weights"]
