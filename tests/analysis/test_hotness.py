"""Coverage, loops, region candidates and per-function totals, on sha256 and on
hand-made graphs whose answers are known exactly."""

from __future__ import annotations

import pytest

from dbtlab import analysis
from tests.analysis.conftest import SHA_COMPRESS_CALLS
from tests.analysis.synthetic import diamond_loop, nested_loops_with_calls


def test_coverage_curve(sha_profile):
    c = analysis.coverage_curve(sha_profile)
    assert len(c) == sum(1 for b in sha_profile.blocks if b["count"])
    assert all(a <= b for a, b in zip(c, c[1:]))
    assert c[-1] == pytest.approx(1.0)
    assert analysis.coverage(sha_profile, 3) > 0.75          # compress's three loops
    k = analysis.blocks_for_coverage(sha_profile, 0.9)
    assert c[k - 1] >= 0.9 > c[k - 2]
    top = analysis.ranked_blocks(sha_profile)[:3]
    assert {b["function"] for b in top} == {"compress"}


def test_sha256_hot_loops_are_compress_loops(sha_graph):
    loops = analysis.hot_loops(sha_graph)
    compress = [lp for lp in loops if lp.functions == ("compress",)]
    # message schedule load (16 words), expansion (48) and the 64 rounds: each is one
    # block chained to itself; its first iteration runs in the block that falls into it
    assert len(compress) >= 3
    top3 = sorted(compress, key=lambda lp: -lp.weight)[:3]
    assert all(len(lp.blocks) == 1 and lp.depth == 0 for lp in top3)
    assert all(lp.entries == SHA_COMPRESS_CALLS for lp in top3)
    assert sorted(round(lp.trip_count) for lp in top3) in ([15, 47, 63], [16, 48, 64])
    assert loops[0] in top3 and loops[0].share > 0.5        # the rounds loop is hottest
    assert sum(lp.share for lp in top3) > 0.75


def test_whole_program_scope_fuses_callers(sha_graph):
    prog = analysis.hot_loops(sha_graph, scope="program", nested=False)
    assert len(prog[0].functions) > 3             # calls and returns tie functions together
    fn = analysis.hot_loops(sha_graph, nested=False)
    assert all(len(lp.functions) == 1 for lp in fn)
    with pytest.raises(ValueError):
        analysis.hot_loops(sha_graph, scope="module")


def test_nested_loops_and_calls():
    doc = nested_loops_with_calls()
    loops = {(lp.header, lp.depth): lp for lp in analysis.hot_loops(doc)}
    outer, inner, h = loops[(2, 0)], loops[(3, 1)], loops[(9, 0)]
    assert set(loops) == {(2, 0), (3, 1), (9, 0)}
    # the outer loop keeps its call block and return site, not the callee
    assert outer.blocks == {2, 3, 4, 5, 6} and outer.functions[0] == "f"
    assert (outer.entries, outer.iterations, outer.trip_count) == (1, 9, 10)
    assert inner.blocks == {3, 4} and inner.parent == 2
    assert (inner.entries, inner.iterations, inner.trip_count) == (10, 90, 10)
    assert h.blocks == {9, 10}
    assert outer.weight == 2 * (10 + 100 + 100 + 10 + 10)
    # across functions, g's two callers become one cycle
    prog = analysis.hot_loops(doc, scope="program", nested=False)
    assert prog[0].blocks == {2, 3, 4, 5, 6, 8, 9, 10}


def test_net_trace_follows_the_likely_path():
    doc = diamond_loop()
    (t,) = analysis.net_traces(doc, threshold=50)
    assert t.rule == "net" and t.head == 1
    assert t.blocks == (1, 2, 4) and t.cyclic
    assert t.completion == pytest.approx(0.9 * 0.99)
    assert t.labels == ("f", "f+0x10", "f+0x30")
    # a lower threshold makes the side exit a trace head of its own, stopping at the head
    ts = analysis.net_traces(doc, threshold=5)
    assert [r.blocks for r in ts] == [(1, 2, 4), (3, 4)]
    assert not ts[1].cyclic
    assert analysis.net_traces(doc, threshold=101) == []


def test_loop_regions_take_whole_loops():
    doc = diamond_loop()
    (r,) = analysis.loop_regions(doc)
    assert r.rule == "loop" and r.head == 1 and r.blocks == (1, 2, 3, 4)
    assert analysis.region_coverage(doc, [r]) == pytest.approx(900 / 901)
    assert analysis.loop_regions(doc, max_blocks=3) == []


def test_sha256_regions(sha_graph, sha_profile):
    traces = analysis.net_traces(sha_graph)
    heads = [sha_graph.nodes[t.head] for t in traces[:3]]
    assert all(h["function"] == "compress" for h in heads)
    assert all(t.cyclic and len(t.blocks) == 1 for t in traces[:3])
    assert all(sha_graph.nodes[t.head]["count"] >= analysis.hotness.NET_THRESHOLD
               for t in traces)
    assert analysis.region_coverage(sha_profile, traces) > 0.9
    regions = analysis.loop_regions(sha_graph)
    assert {r.head for r in regions[:3]} == {t.head for t in traces[:3]}


def test_by_function(sha_profile):
    fs = analysis.by_function(sha_profile)
    assert fs[0].name == "compress" and fs[0].share > 0.75
    assert sum(f.dyn_insns for f in fs) == sha_profile.translated_insns
    assert sum(f.blocks for f in fs) == len(sha_profile.blocks)
    assert all(f.executed_blocks <= f.blocks for f in fs)


def test_translation_summary(sha_profile):
    s = analysis.translation_summary(sha_profile)
    t = sha_profile.translation
    assert s.blocks == t["blocks"] and s.modules == t["modules"] == len(sha_profile.modules)
    assert s.translation == pytest.approx(t["emit_seconds"] + t["compile_seconds"])
    assert s.execution == pytest.approx(sha_profile.wall - s.translation)
    assert s.exits == sum(sha_profile.exits.values()) > 0
    assert s.exits_per_second == pytest.approx(s.exits / sha_profile.wall)
    xs, ys, ns = analysis.translation_timeline(sha_profile)
    assert xs == sorted(xs) and ns[-1] == len(sha_profile.blocks)
    assert ys[-1] == pytest.approx(s.translation, rel=1e-6)
