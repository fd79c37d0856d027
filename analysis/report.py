"""A text summary of a profile (what ``dbtlab report`` prints) and its standard figures."""

from __future__ import annotations

import os
from typing import Any

from dbtlab.analysis.hotness import (blocks_for_coverage, by_function, coverage, hot_loops,
                                     loop_regions, net_traces, ranked_blocks,
                                     region_coverage)
from dbtlab.analysis.graph import block_graph
from dbtlab.analysis.profile import label_of, load
from dbtlab.analysis.timing import translation_summary


def summary(profile: Any, *, top: int = 10) -> str:
    """The profile in a page of text: run, translation, hot blocks, functions, loops,
    region candidates, exits."""
    p = load(profile)
    g = block_graph(p)
    s = translation_summary(p)
    out: list[str] = []
    w = out.append
    w(f"{p.name} {' '.join(p.argv[1:])}".rstrip())
    st = p.run.get("status")
    sig = p.run.get("signal")
    ending = (f"killed by signal {sig}" if sig is not None else
              "stopped at its instruction limit" if p.run.get("stopped") else
              f"exit status {st}" if st is not None else "still running")
    w(f"  accel {p.accel}, {p.instret:,} instructions"
      + (f" in {1e3 * s.wall:.1f} ms ({s.mips:.1f} MIPS), {ending}" if s.wall else ""))
    w(f"  translated {s.blocks} blocks ({s.guest_insns} guest insns) in {s.modules} modules: "
      f"{1e3 * s.emit:.1f} ms emitting + {1e3 * s.compile:.1f} ms compiling "
      f"= {s.us_per_block:.0f} us/block (median module {s.median_us_per_block:.0f})")
    if s.wall:
        w(f"  translation {100 * s.translation_share:.0f}% of wall time, execution and "
          f"runtime {1e3 * s.execution:.1f} ms")
    w(f"  {s.executed_blocks} of {s.blocks} translated blocks executed; "
      f"{p.translated_insns:,} instructions in translated code")
    ex = p.exits
    if ex:
        rate = f" ({s.exits_per_second:,.0f}/s)" if s.exits_per_second is not None else ""
        w(f"  exits to Python: {sum(ex.values()):,}{rate}: " +
          ", ".join(f"{k} {v:,}" for k, v in sorted(ex.items(), key=lambda kv: -kv[1])))
    kinds: dict[str, int] = {}
    for e in p.edges:
        kinds[e["kind"]] = kinds.get(e["kind"], 0) + e["count"]
    if kinds:
        w("  transitions: " + ", ".join(f"{k} {v:,}" for k, v in
                                         sorted(kinds.items(), key=lambda kv: -kv[1])))
    w("")
    w("coverage of dynamic instructions by the hottest blocks")
    w("  " + ", ".join(f"top {k}: {100 * coverage(p, k):.1f}%" for k in (1, 5, 10, 50)
                       if k <= max(len(ranked_blocks(p)), 1)))
    w("  " + ", ".join(f"{100 * f:g}%: {blocks_for_coverage(p, f)} blocks"
                       for f in (0.5, 0.9, 0.99)))
    w("")
    w(f"hottest blocks (top {top})")
    w(f"  {'block':36s} {'pc':>10s} {'count':>10s} {'insns':>5s} {'share':>6s} {'host B':>6s}")
    for b in ranked_blocks(p)[:top]:
        share = b["count"] * b["insns"] / (p.translated_insns or 1)
        hb = b.get("host_bytes")
        w(f"  {label_of(b)[:36]:36s} {b['pc']:#10x} {b['count']:10,} {b['insns']:5d} "
          f"{100 * share:5.1f}% {hb if hb is not None else '-':>6}")
    w("")
    w(f"functions (top {top})")
    w(f"  {'function':36s} {'share':>6s} {'blocks':>6s} {'ran':>4s} {'executions':>11s} "
      f"{'compile ms':>10s}")
    for f in by_function(p)[:top]:
        w(f"  {f.name[:36]:36s} {100 * f.share:5.1f}% {f.blocks:6d} {f.executed_blocks:4d} "
          f"{f.count:11,} {f.compile_us / 1e3:10.1f}")
    w("")
    loops = hot_loops(g)
    w(f"hot loops (strongly connected components per function; top {top} of {len(loops)})")
    w(f"  {'header':36s} {'blocks':>6s} {'share':>6s} {'entries':>8s} {'trip':>7s} depth")
    for lp in loops[:top]:
        w(f"  {lp.header_label[:36]:36s} {len(lp.blocks):6d} {100 * lp.share:5.1f}% "
          f"{lp.entries:8,} {lp.trip_count:7.1f} {lp.depth:5d}")
    w("")
    traces = net_traces(g)
    w(f"NET trace candidates (threshold 50): {len(traces)}, covering "
      f"{100 * region_coverage(p, traces):.1f}% of instructions")
    for r in traces[:top]:
        path = " > ".join(r.labels[:4]) + (" > ..." if len(r.labels) > 4 else "")
        w(f"  {100 * r.share:5.1f}% {r.head_count:9,}x {len(r.blocks):2d} blocks "
          f"p={r.completion:.2f}{' cyclic' if r.cyclic else ''}: {path}")
    installed = p.regions
    if installed:
        by_id = {b["id"]: b for b in p.blocks}
        members = {bid for r in installed for bid in r["blocks"]}
        dyn = sum(by_id[b]["count"] * by_id[b]["insns"] for b in members if b in by_id)
        w(f"second-tier regions installed: {len(installed)}, their blocks ran "
          f"{100 * dyn / (p.translated_insns or 1):.1f}% of instructions")
        for r in installed[:top]:
            head = by_id.get(r["blocks"][0]) if r["blocks"] else None
            name = label_of(head) if head else f"{r['entry']:#x}"
            w(f"  R{r['id']:<3d} {name[:36]:36s} {len(r['blocks']):3d} blocks "
              f"{r['insns']:5d} insns, installed {1e3 * r['installed_at']:.0f} ms into the run")
    regions = loop_regions(g)
    w(f"loop-rule regions: {len(regions)}, covering "
      f"{100 * region_coverage(p, regions):.1f}% of instructions")
    for r in regions[:top]:
        w(f"  {100 * r.share:5.1f}% {r.head_count:9,}x {len(r.blocks):2d} blocks: "
          f"{r.labels[0]} ({', '.join(r.functions)})")
    return "\n".join(out) + "\n"


#: the figures ``write_figures`` produces, by file stem
FIGURES = ("hotness", "hot_subgraph", "functions", "translation", "translation_cost", "exits")


def write_figures(profile: Any, outdir: str | os.PathLike, *, top: int = 25,
                  fmt: str = "png", benchmarks: Any = None) -> list[str]:
    """Write the standard figures into ``outdir`` (created if needed); returns their
    paths. ``benchmarks``: a benchmarks/run.py JSON (path or dict) for a comparison chart."""
    from dbtlab.analysis import plots
    p = load(profile)
    os.makedirs(outdir, exist_ok=True)
    g = block_graph(p)
    figs = {"hotness": lambda: plots.plot_hotness(p),
            "hot_subgraph": lambda: plots.plot_hot_subgraph(g, top),
            "functions": lambda: plots.plot_functions(p),
            "translation": lambda: plots.plot_translation(p),
            "translation_cost": lambda: plots.plot_translation_cost(p),
            "exits": lambda: plots.plot_exits(p)}
    if benchmarks is not None:
        figs["benchmarks"] = lambda: plots.plot_benchmarks(benchmarks)
    paths = []
    for name, make in figs.items():
        path = os.path.join(outdir, f"{name}.{fmt}")
        plots.save(make(), path)
        paths.append(path)
    return paths
