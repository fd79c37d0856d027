"""The block graph of a profiled run, as a networkx DiGraph, and its GraphML / DOT export.

Nodes are translated blocks (keyed by their profile id, so a block translated again after
invalidation is a separate node); edges are observed transitions. The profile may record
several kinds of transition between the same two blocks (a chained exit and an exit to
Python, say): the edge then carries the total ``count``, the dominant ``kind``, and one
count per kind, so nothing is lost by using a simple DiGraph.
"""

from __future__ import annotations

import math
import os
from typing import Any

import networkx as nx

from dbtlab.analysis.profile import EDGE_KINDS, Profile, label_of, load


def block_graph(profile: Any, *, min_count: int = 0) -> nx.DiGraph:
    """The block graph; ``min_count`` drops blocks executed fewer times (0 keeps blocks
    that were translated but never ran, which still cost translation time).

    Node attributes: pc, end, size (guest bytes), insns, count, dyn_insns (count × insns),
    share (of instructions executed in translated code), tier, region (the id of the
    second-tier region it was compiled into, or None), function, offset, label,
    host_bytes, compile_us, module, limit, translated_at, invalidated_at, untranslated_exits.
    Edge attributes: count, kind (dominant), chained/indirect/dispatch/exit (count per
    kind), backward (target pc ≤ source pc: a loop back edge in address order).
    """
    p = load(profile)
    total = p.translated_insns or 1
    g = nx.DiGraph(program=p.name, path=p.program.get("path") or "", accel=p.accel or "",
                   argv=" ".join(p.argv), instret=p.instret,
                   translated_insns=p.translated_insns)
    for b in p.blocks:
        if b["count"] < min_count:
            continue
        dyn = b["count"] * b["insns"]
        g.add_node(b["id"], pc=b["pc"], end=b["end"], size=b.get("guest_bytes"),
                   insns=b["insns"], count=b["count"], dyn_insns=dyn, share=dyn / total,
                   tier=b.get("tier"), region=b.get("region"), function=b.get("function"),
                   offset=b.get("offset"),
                   label=label_of(b), host_bytes=b.get("host_bytes"),
                   compile_us=b.get("compile_us"), module=b.get("module"),
                   limit=b.get("limit"), translated_at=b.get("translated_at"),
                   invalidated_at=b.get("invalidated_at"), untranslated_exits=0)
    for e in p.edges:
        src, dst, n = e["src"], e.get("dst"), e["count"]
        if src not in g:
            continue
        if dst is None:                          # the target was never translated
            g.nodes[src]["untranslated_exits"] += n
            continue
        if dst not in g:
            continue
        if not g.has_edge(src, dst):
            g.add_edge(src, dst, count=0, kind=e["kind"],
                       backward=g.nodes[dst]["pc"] <= g.nodes[src]["pc"],
                       **{k: 0 for k in EDGE_KINDS})
        d = g.edges[src, dst]
        d[e["kind"]] += n
        d["count"] += n
        d["kind"] = max(EDGE_KINDS, key=lambda k: d[k])
    return g


def executed(g: nx.DiGraph) -> nx.DiGraph:
    """The subgraph of blocks that ran at least once."""
    return g.subgraph([n for n, c in g.nodes(data="count") if c > 0]).copy()


def hot_subgraph(g: nx.DiGraph | Any, top: int = 25, *, by: str = "dyn_insns") -> nx.DiGraph:
    """The subgraph induced by the ``top`` blocks with the largest ``by`` attribute
    (dynamic instructions by default, or ``count``)."""
    if not isinstance(g, nx.DiGraph):
        g = block_graph(g)
    nodes = sorted((n for n in g if g.nodes[n]["count"] > 0),
                   key=lambda n: (-g.nodes[n][by], g.nodes[n]["pc"]))[:top]
    return g.subgraph(nodes).copy()


def function_graph(g: nx.DiGraph | Any) -> nx.DiGraph:
    """Blocks merged by function: nodes are functions (blocks, count, dyn_insns), edges
    carry the transitions between blocks of different functions (calls and returns)."""
    if not isinstance(g, nx.DiGraph):
        g = block_graph(g)
    f = nx.DiGraph(**g.graph)
    for n, d in g.nodes(data=True):
        name = d["function"] or "?"
        if name not in f:
            f.add_node(name, blocks=0, count=0, dyn_insns=0, pc=d["pc"])
        fd = f.nodes[name]
        fd["blocks"] += 1
        fd["count"] += d["count"]
        fd["dyn_insns"] += d["dyn_insns"]
        fd["pc"] = min(fd["pc"], d["pc"])
    for u, v, d in g.edges(data=True):
        a, b = g.nodes[u]["function"] or "?", g.nodes[v]["function"] or "?"
        if a == b:
            continue
        if not f.has_edge(a, b):
            f.add_edge(a, b, count=0)
        f.edges[a, b]["count"] += d["count"]
    return f


# ---- export -------------------------------------------------------------------------------
def write_graphml(g: nx.DiGraph, path: str | os.PathLike) -> None:
    """GraphML (readable by networkx, Gephi, yEd). Absent values (None) are left out."""
    nx.write_graphml(_without_none(g), path)


def read_graphml(path: str | os.PathLike) -> nx.DiGraph:
    """Read back a graph written by write_graphml (node ids become ints again)."""
    return nx.read_graphml(path, node_type=int)


def write_dot(g: nx.DiGraph, path: str | os.PathLike) -> None:
    """Graphviz DOT, written directly (no pydot/pygraphviz needed): boxes labelled with
    function+offset, execution count and size, shaded by heat; edges labelled with their
    counts, solid for chained, dashed for indirect, dotted for dispatch, red for exits."""
    with open(path, "w") as f:
        f.write(to_dot(g))


def to_dot(g: nx.DiGraph) -> str:
    style = {"chained": "solid", "indirect": "dashed", "dispatch": "dotted", "exit": "bold"}
    top = max((d.get("dyn_insns", 0) for _, d in g.nodes(data=True)), default=0) or 1
    lines = [f"digraph {_q(g.graph.get('program') or 'blocks')} {{",
             '  graph [rankdir=TB, fontname="Helvetica"];',
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
             '  edge [fontname="Helvetica", fontsize=9];']
    for n, d in sorted(g.nodes(data=True), key=lambda nd: nd[1].get("pc", 0)):
        heat = math.log1p(d.get("dyn_insns", 0)) / math.log1p(top)
        fill = _heat_colour(heat)
        label = "\\n".join(_esc(x) for x in (
            str(d.get("label", n)), f"{d.get('pc', 0):#x}",
            f"{_si(d.get('count', 0))}× {d.get('insns', 0)} insns"))
        lines.append(f'  n{n} [label="{label}", fillcolor="{fill}", '
                     f'tooltip="{_esc(str(d.get("function") or ""))}"];')
    for u, v, d in g.edges(data=True):
        kind = d.get("kind", "chained")
        width = 1 + math.log10(max(d.get("count", 1), 1))
        colour = "#c0392b" if kind == "exit" else "#333333"
        lines.append(f'  n{u} -> n{v} [label="{_si(d.get("count", 0))}", '
                     f'style={style.get(kind, "solid")}, penwidth={width:.2f}, '
                     f'color="{colour}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def export(g: nx.DiGraph, path: str | os.PathLike) -> None:
    """Write ``g`` as GraphML (.graphml) or DOT (.dot, .gv), chosen by the file name."""
    ext = os.fspath(path).lower().rsplit(".", 1)[-1]
    if ext == "graphml":
        write_graphml(g, path)
    elif ext in ("dot", "gv"):
        write_dot(g, path)
    else:
        raise ValueError(f"unknown graph format .{ext} (use .graphml or .dot)")


def _without_none(g: nx.DiGraph) -> nx.DiGraph:
    h = nx.DiGraph(**{k: v for k, v in g.graph.items() if v is not None})
    for n, d in g.nodes(data=True):
        h.add_node(n, **{k: v for k, v in d.items() if v is not None})
    for u, v, d in g.edges(data=True):
        h.add_edge(u, v, **{k: v for k, v in d.items() if v is not None})
    return h


def _heat_colour(x: float) -> str:
    """White (cold) to red (hot)."""
    x = min(max(x, 0.0), 1.0)
    return "#%02x%02x%02x" % (255, int(255 - 170 * x), int(255 - 200 * x))


def _si(n: float) -> str:
    """1234 -> 1.2k, 8246000 -> 8.2M."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.1f}{suffix}"
    return f"{n:g}" if isinstance(n, float) else str(n)


def _esc(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"')


def _q(s: str) -> str:
    return '"' + _esc(s) + '"'
