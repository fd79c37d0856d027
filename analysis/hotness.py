"""Where the time goes: coverage by the hottest blocks, hot loops, region/trace candidates,
per-function totals.

"Weight" is always dynamic guest instructions (executions × instructions in the block),
the unit that translated-code time is roughly proportional to; block counts alone would
make a one-instruction block look as important as a fifty-instruction one.

The profile records edge counts, not paths. The trace rules below therefore follow the most
frequent successor of each block (the most likely next-executing tail), and report with each
trace the probability that an execution entering its head runs it to the end
(``completion``: the product of the branch probabilities along it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from dbtlab.analysis.graph import block_graph
from dbtlab.analysis.profile import Profile, load

#: Dynamo's trace-head threshold (Duesterwald & Bala, "Software profiling for hot path
#: prediction: less is more", ASPLOS 2000)
NET_THRESHOLD = 50
NET_MAX_BLOCKS = 16


# ---- coverage -----------------------------------------------------------------------------
def ranked_blocks(profile: Any) -> list[dict]:
    """Executed blocks, hottest first (by dynamic instructions, then pc)."""
    p = load(profile)
    return sorted((b for b in p.blocks if b["count"] > 0),
                  key=lambda b: (-b["count"] * b["insns"], b["pc"]))


def coverage_curve(profile: Any) -> list[float]:
    """``curve[k-1]``: the fraction of translated-code instructions executed by the k
    hottest blocks."""
    p = load(profile)
    total = p.translated_insns
    acc, out = 0, []
    for b in ranked_blocks(p):
        acc += b["count"] * b["insns"]
        out.append(acc / total)
    return out


def coverage(profile: Any, k: int) -> float:
    """Fraction of dynamic instructions executed by the ``k`` hottest blocks."""
    c = coverage_curve(profile)
    return 0.0 if k <= 0 or not c else c[min(k, len(c)) - 1]


def blocks_for_coverage(profile: Any, fraction: float) -> int:
    """The fewest hottest blocks that together execute ``fraction`` of the instructions."""
    for k, c in enumerate(coverage_curve(profile), 1):
        if c >= fraction - 1e-12:
            return k
    return len(coverage_curve(profile))


# ---- loops --------------------------------------------------------------------------------
@dataclass
class Loop:
    """A strongly connected set of blocks that executed together, with its entry."""

    header: int                   # block id: the entry most often reached from outside
    blocks: frozenset[int]
    weight: int                   # dynamic instructions in the loop's blocks
    share: float                  # of instructions executed in translated code
    entries: int                  # transitions into the loop from outside
    iterations: int               # back-edge transitions (into the header from inside)
    depth: int                    # 0 for an outermost loop
    parent: int | None            # header of the enclosing loop
    functions: tuple[str, ...]    # functions of its blocks, heaviest first
    header_label: str = ""

    @property
    def trip_count(self) -> float:
        """Average iterations per entry."""
        return (self.iterations + self.entries) / self.entries if self.entries else float("inf")


def hot_loops(source: Any, *, min_share: float = 0.0, nested: bool = True,
              scope: str = "function") -> list[Loop]:
    """Loops as strongly connected components of the executed block graph, heaviest first.

    ``scope="function"`` (default) looks for loops inside each function: transitions
    between functions are dropped and every call is replaced by an edge from the calling
    block to its return site (the block at the caller's end address), so a loop whose body
    calls a function stays one loop, and two call sites of one function do not fuse their
    callers into a cycle. ``scope="program"`` takes the raw whole-program graph, where
    calls and returns through shared functions (printf, memcpy) make most of a program one
    big component.

    The header of a component is the block most often entered from outside it (for a
    component that is never entered, its lowest address). With ``nested`` the edges back
    into the header are removed and the rest decomposed again, giving inner loops (depth
    1, 2, ...); an outer loop's weight includes its inner loops'.
    """
    if scope not in ("function", "program"):
        raise ValueError(f"scope must be 'function' or 'program', not {scope!r}")
    g = source if isinstance(source, nx.DiGraph) else block_graph(source)
    live = _loop_graph(g, scope == "function")
    total = g.graph.get("translated_insns") or 1
    loops: list[Loop] = []
    _find_loops(g, live, 0, None, total, nested, loops)
    loops.sort(key=lambda lp: (-lp.weight, lp.depth, g.nodes[lp.header]["pc"]))
    return [lp for lp in loops if lp.share >= min_share]


def _loop_graph(g: nx.DiGraph, intraprocedural: bool) -> nx.DiGraph:
    """Executed blocks and transitions (``count``); ``entry`` on a node counts the entries
    that the graph does not show as edges (calls into it, in the intraprocedural view)."""
    live = nx.DiGraph()
    live.add_nodes_from((n, {"entry": 0}) for n in g if g.nodes[n]["count"] > 0)
    fn = {n: g.nodes[n]["function"] for n in live}
    at = {(fn[n], g.nodes[n]["pc"]): n for n in live}
    for u, v, c in g.edges(data="count"):
        if c <= 0 or u not in live or v not in live:
            continue
        if not intraprocedural or (fn[u] == fn[v] and fn[u] is not None):
            live.add_edge(u, v, count=live.edges[u, v]["count"] + c if live.has_edge(u, v)
                          else c)
            continue
        if g.nodes[v]["offset"] == 0:            # a call: entry into v, summary edge in u
            live.nodes[v]["entry"] += c
            r = at.get((fn[u], g.nodes[u]["end"]))
            if r is not None and r != u:
                prev = live.edges[u, r]["count"] if live.has_edge(u, r) else 0
                live.add_edge(u, r, count=prev + c)
    return live


def _find_loops(g: nx.DiGraph, live: nx.DiGraph, depth: int, parent: int | None,
                total: int, nested: bool, out: list[Loop]) -> None:
    for comp in nx.strongly_connected_components(live):
        if len(comp) == 1:
            (n,) = comp
            if not live.has_edge(n, n):
                continue
        ins = {n: live.nodes[n]["entry"] + sum(c for u, _, c in live.in_edges(n, data="count")
                                               if u not in comp) for n in comp}
        header = min(comp, key=lambda n: (-ins[n], g.nodes[n]["pc"]))
        weight = sum(g.nodes[n]["dyn_insns"] for n in comp)
        iters = sum(c for u, _, c in live.in_edges(header, data="count") if u in comp)
        fw: dict[str, int] = {}
        for n in comp:
            f = g.nodes[n]["function"] or "?"
            fw[f] = fw.get(f, 0) + g.nodes[n]["dyn_insns"]
        out.append(Loop(header, frozenset(comp), weight, weight / total, sum(ins.values()),
                        iters, depth, parent, tuple(sorted(fw, key=lambda f: -fw[f])),
                        g.nodes[header]["label"]))
        if nested and len(comp) > 1:
            # without the edges back into the header, what is still cyclic is an inner loop
            inner = live.subgraph(comp).copy()
            inner.remove_edges_from([(u, header) for u in comp if inner.has_edge(u, header)])
            _find_loops(g, inner, depth + 1, header, total, nested, out)


# ---- region / trace candidates -------------------------------------------------------------
@dataclass
class Region:
    """A candidate for a second-tier translation unit (a trace or a loop region)."""

    rule: str                     # "net" or "loop"
    head: int                     # block id where the region is entered
    blocks: tuple[int, ...]       # in execution (net) or address (loop) order
    head_count: int               # executions of the head
    weight: int                   # dynamic instructions of its blocks (upper bound)
    share: float
    completion: float             # P(an entry at the head runs to the end) — 1.0 for loops
    functions: tuple[str, ...]
    labels: tuple[str, ...] = field(default=())
    cyclic: bool = False          # the trace ends with a branch back to its head


def net_traces(source: Any, *, threshold: int = NET_THRESHOLD,
               max_blocks: int = NET_MAX_BLOCKS, min_completion: float = 0.1) -> list[Region]:
    """Traces by the NET rule (next-executing tail, as in Dynamo).

    Trace heads are targets of backward direct branches inside a function (loop headers:
    returns and calls to lower addresses do not count) and, once traces exist,
    targets of their side exits; a head that executed at least ``threshold`` times starts a
    trace that follows the most frequent successor until a backward transition (the trace
    closes), another trace head, a block already in the trace, or ``max_blocks``. Because
    the profile has edge counts, not paths, the tail also stops before its estimated
    completion would fall below ``min_completion`` (a return, say, goes back to the most
    frequent caller, which need not be this trace's).
    """
    g = source if isinstance(source, nx.DiGraph) else block_graph(source)
    total = g.graph.get("translated_insns") or 1
    heads = {v for u, v, d in g.edges(data=True) if _loop_back(g, u, v, d)}
    pending = sorted((h for h in heads if g.nodes[h]["count"] >= threshold),
                     key=lambda h: (-g.nodes[h]["count"], g.nodes[h]["pc"]))
    done: set[int] = set()
    traces: list[Region] = []
    while pending:
        head = pending.pop(0)
        if head in done:
            continue
        done.add(head)
        path, prob, cyclic = [head], 1.0, False
        cur = head
        while len(path) < max_blocks:
            succ = [(v, d) for _, v, d in g.out_edges(cur, data=True) if d["count"] > 0]
            if not succ:
                break
            v, d = max(succ, key=lambda vd: (vd[1]["count"], -g.nodes[vd[0]]["pc"]))
            p_next = prob * d["count"] / max(g.nodes[cur]["count"], 1)
            if p_next < min_completion:
                break
            prob = p_next
            if v == head:
                cyclic = True
                break
            if _loop_back(g, cur, v, d) or v in path or v in heads:
                break
            path.append(v)
            cur = v
        traces.append(_region(g, "net", head, path, prob, total, cyclic))
        # side exits taken often enough become new trace heads
        on_path = set(zip(path, path[1:] + ([head] if cyclic else [])))
        new = []
        for u in path:
            for _, v, d in g.out_edges(u, data=True):
                if (u, v) not in on_path and d["count"] >= threshold and v not in done \
                        and v not in path and g.nodes[v]["count"] >= threshold:
                    heads.add(v)
                    new.append(v)
        pending = sorted(set(pending) | set(new),
                         key=lambda h: (-g.nodes[h]["count"], g.nodes[h]["pc"]))
    traces.sort(key=lambda r: (-r.weight, g.nodes[r.head]["pc"]))
    return traces


def _loop_back(g: nx.DiGraph, u: int, v: int, d: dict) -> bool:
    """A taken direct branch to a lower (or the same) address in the same function."""
    return (d["count"] > 0 and d["backward"] and d["chained"] + d["dispatch"] > 0
            and g.nodes[u]["function"] == g.nodes[v]["function"])


def loop_regions(source: Any, *, threshold: int = NET_THRESHOLD,
                 max_blocks: int = 64) -> list[Region]:
    """Regions by the loop rule: every innermost-to-outermost hot loop whose header ran at
    least ``threshold`` times and that has at most ``max_blocks`` blocks becomes one region
    (all its blocks, in address order), so side paths inside the loop stay in the region."""
    g = source if isinstance(source, nx.DiGraph) else block_graph(source)
    total = g.graph.get("translated_insns") or 1
    out = []
    for lp in hot_loops(g):
        if g.nodes[lp.header]["count"] < threshold or len(lp.blocks) > max_blocks:
            continue
        blocks = [lp.header] + sorted(lp.blocks - {lp.header}, key=lambda n: g.nodes[n]["pc"])
        out.append(_region(g, "loop", lp.header, blocks, 1.0, total, True))
    return out


def region_coverage(profile: Any, regions: list[Region]) -> float:
    """Fraction of dynamic instructions executed in blocks that belong to some region."""
    p = load(profile)
    ids = {n for r in regions for n in r.blocks}
    return sum(b["count"] * b["insns"] for b in p.blocks if b["id"] in ids) / \
        (p.translated_insns or 1)


def _region(g, rule, head, path, prob, total, cyclic) -> Region:
    weight = sum(g.nodes[n]["dyn_insns"] for n in path)
    fns = []
    for n in path:
        f = g.nodes[n]["function"] or "?"
        if f not in fns:
            fns.append(f)
    return Region(rule, head, tuple(path), g.nodes[head]["count"], weight, weight / total,
                  prob, tuple(fns), tuple(g.nodes[n]["label"] for n in path), cyclic)


# ---- functions ----------------------------------------------------------------------------
@dataclass
class FunctionStats:
    name: str
    blocks: int                   # translated blocks whose pc is in the function
    executed_blocks: int
    count: int                    # block executions
    dyn_insns: int
    share: float
    static_insns: int             # guest instructions translated
    host_bytes: int
    compile_us: float


def by_function(profile: Any) -> list[FunctionStats]:
    """Totals per function (ELF symbol containing each block's pc), heaviest first."""
    p: Profile = load(profile)
    total = p.translated_insns or 1
    acc: dict[str, list] = {}
    for b in p.blocks:
        name = b.get("function") or "?"
        a = acc.setdefault(name, [0, 0, 0, 0, 0, 0, 0.0])
        a[0] += 1
        a[1] += b["count"] > 0
        a[2] += b["count"]
        a[3] += b["count"] * b["insns"]
        a[4] += b["insns"]
        a[5] += b.get("host_bytes") or 0
        a[6] += b.get("compile_us") or 0.0
    out = [FunctionStats(n, a[0], a[1], a[2], a[3], a[3] / total, a[4], a[5], a[6])
           for n, a in acc.items()]
    out.sort(key=lambda f: (-f.dyn_insns, f.name))
    return out
