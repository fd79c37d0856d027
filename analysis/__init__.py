"""dbtlab.analysis: profiles, block graphs, hotness, plots and reports.

Reads the on-disk profile format (docs/profile-format.md) and the public API only, never
the JIT's internals, so it works on a profile from another machine or an older run::

    from dbtlab import analysis
    p = analysis.profile_run("guests/bin/sha256", ["2048", "4"])   # or analysis.load("p.json")
    print(analysis.summary(p))
    g = analysis.block_graph(p)                 # networkx DiGraph of blocks and transitions
    analysis.hot_loops(g)[:3], analysis.net_traces(g)[:3]
    analysis.plot_hotness(p).savefig("hotness.png")

Names are imported on first use (networkx and matplotlib load only when needed).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "profile": ("FORMAT", "SUPPORTED_VERSIONS", "EDGE_KINDS", "Profile", "ProfileError",
                "load", "load_file", "from_result", "profile_run", "validate"),
    "graph": ("block_graph", "executed", "hot_subgraph", "function_graph", "write_graphml",
              "read_graphml", "write_dot", "to_dot", "export"),
    "hotness": ("ranked_blocks", "coverage_curve", "coverage", "blocks_for_coverage", "Loop",
                "hot_loops", "Region", "net_traces", "loop_regions", "region_coverage",
                "FunctionStats", "by_function"),
    "timing": ("TranslationSummary", "translation_summary", "module_table",
               "translation_timeline"),
    "benchmarks": ("load_benchmarks", "medians", "ratios", "engines_of", "geomean"),
    "plots": ("new_figure", "save", "plot_hotness", "plot_functions", "plot_hot_subgraph",
              "plot_translation", "plot_translation_cost", "plot_exits", "plot_benchmarks"),
    "report": ("summary", "write_figures", "FIGURES"),
}
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module 'dbtlab.analysis' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"dbtlab.analysis.{mod}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
