"""Figures for papers and notebooks, drawn with matplotlib's object API on the Agg canvas.

Every function returns a ``matplotlib.figure.Figure`` (or draws into ``ax`` when given one)
and never touches pyplot or the global backend, so it works headless (CLI, CI) and inside
notebooks alike (a returned Figure displays inline with ``%matplotlib inline``). Save with
``fig.savefig("x.png")`` (.svg and .pdf too) or ``save(fig, path)``.
"""

from __future__ import annotations

import math
import os
from typing import Any

import networkx as nx
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from dbtlab.analysis import benchmarks as bench
from dbtlab.analysis.graph import _si, block_graph, hot_subgraph
from dbtlab.analysis.hotness import blocks_for_coverage, by_function, coverage_curve
from dbtlab.analysis.profile import load
from dbtlab.analysis.timing import module_table, translation_summary, translation_timeline

KIND_STYLE = {"chained": ("#333333", "solid"), "indirect": ("#1f77b4", "dashed"),
              "dispatch": ("#7f7f7f", "dotted"), "exit": ("#d62728", "solid")}
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#bcbd22", "#17becf", "#7f7f7f"]
REGION_RING = "#E07B00"   # blocks compiled into a second-tier region


def new_figure(width: float = 6.4, height: float = 4.0) -> Figure:
    """A Figure on the Agg canvas (no pyplot, no global state)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: str | os.PathLike, dpi: int = 150) -> str:
    """Save by extension (.png, .svg, .pdf); returns the path."""
    fig.savefig(path, dpi=dpi)
    return os.fspath(path)


def _plain_log(axis) -> None:
    """Log-scale ticks as 0.6, 2, 10 rather than 6×10⁻¹."""
    f = FuncFormatter(lambda v, _: f"{v:g}")
    axis.set_major_formatter(f)
    axis.set_minor_formatter(FuncFormatter(
        lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))


def _axes(ax, width=6.4, height=4.0):
    if ax is not None:
        return ax.figure, ax
    fig = new_figure(width, height)
    return fig, fig.subplots()


# ---- hotness ------------------------------------------------------------------------------
def plot_hotness(profile: Any, ax=None, *, marks=(0.5, 0.9, 0.99)) -> Figure:
    """Cumulative share of executed instructions against the number of hottest blocks."""
    p = load(profile)
    curve = coverage_curve(p)
    fig, ax = _axes(ax)
    ks = list(range(1, len(curve) + 1))
    ax.step(ks, [100 * c for c in curve], where="post", color=PALETTE[0], lw=2)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlim(0.8, max(len(curve), 2) * 1.2)
    ax.set_ylim(0, 101)
    ax.set_xlabel("hottest blocks (k)")
    ax.set_ylabel("dynamic instructions covered (%)")
    ax.set_title(f"{p.name}: {len(curve)} executed blocks of {len(p.blocks)} translated")
    ax.grid(True, which="both", alpha=0.3)
    for m in marks:
        k = blocks_for_coverage(p, m)
        ax.axhline(100 * m, color="#999999", lw=0.8, ls=":")
        ax.plot([k], [100 * curve[k - 1]], "o", color=PALETTE[3])
        ax.annotate(f"{100 * m:g}%: {k} block{'s' if k > 1 else ''}", (k, 100 * curve[k - 1]),
                    xytext=(6, -12), textcoords="offset points", fontsize=8)
    return fig


def plot_functions(profile: Any, ax=None, *, top: int = 10) -> Figure:
    """Share of dynamic instructions per function (the ``top`` heaviest)."""
    fs = by_function(profile)[:top]
    fig, ax = _axes(ax, 6.4, 0.35 * len(fs) + 1.2)
    names = [f.name for f in fs][::-1]
    ax.barh(names, [100 * f.share for f in fs][::-1], color=PALETTE[0])
    for i, f in enumerate(fs[::-1]):
        ax.text(100 * f.share, i, f" {100 * f.share:.1f}%  ({f.executed_blocks} blocks)",
                va="center", fontsize=8)
    ax.set_xlabel("dynamic instructions (%)")
    ax.set_xlim(0, 115)
    ax.set_title("instructions by function")
    return fig


# ---- the hot subgraph ---------------------------------------------------------------------
def plot_hot_subgraph(source: Any, top: int = 25, ax=None, *,
                      edge_labels: bool = True) -> Figure:
    """The ``top`` hottest blocks and the transitions between them.

    One column per function (ordered by address), blocks top to bottom by address, so
    loops show up as arcs back up a column. Node area ∝ dynamic instructions, colour =
    function, a thick orange ring = compiled into a second-tier region (its id after the
    count); edge width ∝ log(count), labelled with the count; solid black = chained,
    dashed blue = indirect (jump cache), dotted grey = back to the dispatcher, red = exit
    to Python.
    """
    g = source if isinstance(source, nx.DiGraph) else block_graph(source)
    h = hot_subgraph(g, top)
    funcs = sorted({d["function"] or "?" for _, d in h.nodes(data=True)},
                   key=lambda f: min(d["pc"] for _, d in h.nodes(data=True)
                                     if (d["function"] or "?") == f))
    col = {f: i for i, f in enumerate(funcs)}
    colour = {f: PALETTE[i % len(PALETTE)] for i, f in enumerate(funcs)}
    pos = {}
    rows = 1
    for f in funcs:
        ns = sorted((n for n, d in h.nodes(data=True) if (d["function"] or "?") == f),
                    key=lambda n: h.nodes[n]["pc"])
        rows = max(rows, len(ns))
        for r, n in enumerate(ns):
            pos[n] = (col[f] * 2.0, -float(r))
    fig, ax = _axes(ax, min(24.0, max(6.0, 1.7 * len(funcs) + 1.0)),
                    min(18.0, max(4.0, 0.75 * rows + 1.6)))
    top_dyn = max((d["dyn_insns"] for _, d in h.nodes(data=True)), default=1) or 1
    nodelist = list(h)
    sizes = [60 + 900 * math.sqrt(h.nodes[n]["dyn_insns"] / top_dyn) for n in nodelist]
    size_of = dict(zip(nodelist, sizes))
    nx.draw_networkx_nodes(h, pos, nodelist=nodelist, node_size=sizes, ax=ax,
                           node_color=[colour[h.nodes[n]["function"] or "?"]
                                       for n in nodelist],
                           alpha=0.9, edgecolors=[REGION_RING if h.nodes[n].get("region")
                                                  else "#222222" for n in nodelist],
                           linewidths=[2.6 if h.nodes[n].get("region") else 0.6
                                       for n in nodelist])
    for n in nodelist:
        d = h.nodes[n]
        x, y = pos[n]
        rid = f" R{d['region']}" if d.get("region") else ""
        ax.annotate(f"+{d['offset'] or 0:#x}\n{_si(d['count'])}×{d['insns']}{rid}", (x, y),
                    xytext=(math.sqrt(size_of[n]) / 2 + 3, 0), textcoords="offset points",
                    fontsize=6.5, va="center", ha="left", color="#222222")
    maxc = max((d["count"] for *_, d in h.edges(data=True)), default=1) or 1
    for kind, (ecol, style) in KIND_STYLE.items():
        el = [(u, v) for u, v, d in h.edges(data=True) if d["kind"] == kind]
        for u, v in el:
            w = 0.6 + 2.6 * math.log1p(h.edges[u, v]["count"]) / math.log1p(maxc)
            if u == v:
                _self_loop(ax, pos[u], math.sqrt(size_of[u]) / 2, w, ecol, style,
                           _si(h.edges[u, v]["count"]) if edge_labels else None)
                continue
            nx.draw_networkx_edges(h, pos, edgelist=[(u, v)], width=w, edge_color=ecol,
                                   style=style, ax=ax, arrows=True, arrowsize=8,
                                   node_size=[size_of[u], size_of[v]], nodelist=[u, v],
                                   connectionstyle="arc3,rad=0.2")
        if edge_labels:
            nx.draw_networkx_edge_labels(
                h, pos, ax=ax, font_size=6, font_color=ecol, rotate=False,
                edge_labels={e: _si(h.edges[e]["count"]) for e in el if e[0] != e[1]},
                connectionstyle="arc3,rad=0.2", node_size=[size_of[n] for n in nodelist],
                nodelist=nodelist, bbox=dict(fc="white", ec="none", pad=0.1, alpha=0.8))
    for f in funcs:
        ax.text(col[f] * 2.0, 0.6, _short(f), ha="center", va="bottom", fontsize=8, weight="bold",
                color=colour[f])
    ax.set_xlim(-0.9, 2.0 * (len(funcs) - 1) + 1.3)
    ax.set_ylim(-rows + 0.4, 1.0)
    ax.set_axis_off()
    legend = [Line2D([0], [0], color=c, ls=s, lw=1.5, label=k)
              for k, (c, s) in KIND_STYLE.items()
              if any(d["kind"] == k for *_, d in h.edges(data=True))]
    if any(d.get("region") for _, d in h.nodes(data=True)):
        legend.append(Line2D([0], [0], marker="o", ls="none", mfc="white",
                             mec=REGION_RING, mew=2.2, label="in a region (Rn)"))
    if legend:
        ax.legend(handles=legend, loc="lower right", fontsize=7, frameon=False)
    share = sum(d["dyn_insns"] for _, d in h.nodes(data=True)) / \
        (g.graph.get("translated_insns") or 1)
    ax.set_title(f"{g.graph.get('program', '')}: {len(h)} hottest blocks "
                 f"({100 * share:.1f}% of instructions)", fontsize=10)
    return fig


def _short(name: str, n: int = 20) -> str:
    """compiler_rt.memcpy.memcpyFast -> memcpyFast; long names cut with an ellipsis."""
    if len(name) > n and "." in name:
        name = name.rsplit(".", 1)[-1]
    return name if len(name) <= n else name[:n - 1] + "…"


def _self_loop(ax, xy, radius_pt, width, colour, style, label) -> None:
    """A loop on the left of a node, in points so it does not scale with the node
    (networkx's self loops grow with the node size)."""
    reach = radius_pt + 16
    common = dict(color=colour, lw=width, ls=style, shrinkA=0, shrinkB=radius_pt + 1,
                  mutation_scale=8)
    # out of the node's top-left, round to a point on its left, back into its bottom-left
    ax.annotate("", xy=xy, xytext=(-reach, 0), textcoords="offset points",
                arrowprops=dict(arrowstyle="-", connectionstyle="arc3,rad=-0.75", **common))
    ax.annotate("", xy=xy, xytext=(-reach, 0), textcoords="offset points",
                arrowprops=dict(arrowstyle="-|>", connectionstyle="arc3,rad=0.75", **common))
    if label:
        ax.annotate(label, xy, xytext=(-reach - 3, 0), textcoords="offset points",
                    fontsize=6, color=colour, ha="right", va="center",
                    bbox=dict(fc="white", ec="none", pad=0.1, alpha=0.8))


# ---- translation and exits ----------------------------------------------------------------
def plot_translation(profile: Any) -> Figure:
    """Translation time against execution time: where the wall time went, and translation
    time accumulating over the run (with the blocks translated)."""
    p = load(profile)
    s = translation_summary(p)
    fig = new_figure(10, 3.6)
    a1, a2 = fig.subplots(1, 2, width_ratios=[1, 1.4])
    parts = [("emit IR (Python)", s.emit, PALETTE[1]), ("LLVM compile", s.compile, PALETTE[3])]
    if s.execution is not None:
        parts.append(("execution + runtime", s.execution, PALETTE[0]))
    left = 0.0
    for name, v, c in parts:
        a1.barh([0], [1e3 * v], left=[left], color=c, label=f"{name}: {1e3 * v:.0f} ms")
        left += 1e3 * v
    a1.set_yticks([])
    a1.set_xlabel("ms")
    a1.set_title(f"{p.name}: wall {1e3 * s.wall:.0f} ms" if s.wall else
                 f"{p.name}: translation {1e3 * s.translation:.0f} ms")
    a1.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), fontsize=8, frameon=False)
    xs, ys, ns = translation_timeline(p)
    end = s.wall or (xs[-1] if xs else 1.0)
    a2.step([0] + xs + [end], [0] + [1e3 * y for y in ys] + [1e3 * ys[-1] if ys else 0],
            where="post", color=PALETTE[3], label="cumulative translation time")
    a2.plot([0, end], [0, 1e3 * end], ls="--", color="#999999", lw=0.8, label="wall clock")
    a2.set_xlabel("run time (s)")
    a2.set_ylabel("translation (ms)")
    b = a2.twinx()
    b.step([0] + xs, [0] + ns, where="post", color=PALETTE[2], lw=1, alpha=0.7)
    b.set_ylabel("blocks translated", color=PALETTE[2])
    a2.set_title(f"{s.blocks} blocks, {s.modules} modules, {s.us_per_block:.0f} µs/block")
    a2.legend(loc="lower right", fontsize=8)
    return fig


def plot_translation_cost(profile: Any, ax=None) -> Figure:
    """Cost per block of each translation module against its size (batching amortises
    LLVM's fixed per-module cost)."""
    rows = [r for r in module_table(profile) if r["blocks"]]
    fig, ax = _axes(ax)
    ax.scatter([r["blocks"] for r in rows], [r["us_per_block"] for r in rows], s=14,
               color=PALETTE[0], alpha=0.7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log(ax.xaxis)
    _plain_log(ax.yaxis)
    ax.set_xlabel("blocks in the module")
    ax.set_ylabel("µs per block (emit + compile)")
    ax.set_title(f"{len(rows)} translation modules")
    ax.grid(True, which="both", alpha=0.3)
    return fig


def plot_exits(profile: Any, ax=None) -> Figure:
    """Exits from translated code to Python, by reason."""
    p = load(profile)
    ex = sorted(p.exits.items(), key=lambda kv: kv[1])
    fig, ax = _axes(ax, 6.4, 0.4 * max(len(ex), 1) + 1.4)
    if not ex:
        ax.text(0.5, 0.5, "no exits recorded", ha="center", va="center")
        ax.set_axis_off()
        return fig
    ax.barh([k for k, _ in ex], [v for _, v in ex], color=PALETTE[3])
    for i, (k, v) in enumerate(ex):
        rate = f", {v / p.wall:,.0f}/s" if p.wall else ""
        ax.text(v, i, f" {v:,}{rate}", va="center", fontsize=8)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlim(0.8, max(v for _, v in ex) * 8)
    ax.set_xlabel("exits to Python")
    ax.set_title(f"{p.name}: {sum(v for _, v in ex):,} exits to Python")
    return fig


# ---- accelerators -------------------------------------------------------------------------
def plot_benchmarks(results: Any) -> Figure:
    """Median wall time per program and engine (left, log scale) and the ratio of llvm
    (cold cache) and llvm-warm to each peer, with geometric means (right; < 1: dbtlab is
    faster)."""
    res = bench.load_benchmarks(results)
    engines = bench.engines_of(res)
    med = bench.medians(res)
    progs = list(med)
    fig = new_figure(max(8.0, 0.9 * len(progs) + 5), 4.0)
    a1, a2 = fig.subplots(1, 2)
    w = 0.8 / max(len(engines), 1)
    for i, e in enumerate(engines):
        xs = [j + (i - (len(engines) - 1) / 2) * w for j, p in enumerate(progs) if e in med[p]]
        ys = [med[p][e] for p in progs if e in med[p]]
        a1.bar(xs, ys, w, label=e, color=PALETTE[i % len(PALETTE)])
    a1.set_yscale("log")
    _plain_log(a1.yaxis)
    a1.set_xticks(range(len(progs)), progs, rotation=45, ha="right")
    a1.set_ylabel("median wall time (s)")
    a1.set_title("time per engine")
    a1.legend(fontsize=8)
    # dbtlab as users run it (cold cache, solid) and with a warm cache (hatched), against
    # each peer measured in the same run
    pairs = [(mine, peer) for peer in bench.PEERS if peer in engines
             for mine in ("llvm", "llvm-warm") if mine in engines]
    w = 0.8 / max(len(pairs), 1)
    for i, (mine, peer) in enumerate(pairs):
        r = bench.ratios(res, base=mine).get(peer, {})
        if not r:
            continue
        xs = [j + (i - (len(pairs) - 1) / 2) * w for j, p in enumerate(progs) if p in r]
        gm = bench.geomean(list(r.values()))
        c = PALETTE[engines.index(peer) % len(PALETTE)]
        warm = mine != "llvm"
        a2.bar(xs, [r[p] for p in progs if p in r], w, color=c, alpha=0.55 if warm else 1.0,
               hatch="//" if warm else None, edgecolor="white" if warm else None,
               label=f"{mine}/{peer} (geomean {gm:.2f})")
        a2.axhline(gm, color=c, ls=":" if warm else "--", lw=0.8)
    a2.axhline(1.0, color="black", lw=0.8)
    a2.set_yscale("log")
    _plain_log(a2.yaxis)
    a2.set_xticks(range(len(progs)), progs, rotation=45, ha="right")
    a2.set_ylabel("dbtlab time / peer time")
    a2.set_title("dbtlab relative to peers (< 1: dbtlab faster)")
    if pairs:
        a2.legend(fontsize=7, loc="best", framealpha=0.9)
    return fig


__all__ = ["new_figure", "save", "plot_hotness", "plot_functions", "plot_hot_subgraph",
           "plot_translation", "plot_translation_cost", "plot_exits", "plot_benchmarks"]
