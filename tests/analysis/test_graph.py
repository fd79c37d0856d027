"""The block graph of real runs: contents, consistency with the block counts, exports."""

from __future__ import annotations

import re
from collections import Counter

import networkx as nx
import pytest

import dbtlab
from dbtlab import analysis
from tests.analysis.conftest import SHA_COMPRESS_CALLS
from tests.conftest import GUESTS, load_manifest


def test_nodes_carry_the_block_records(sha_profile, sha_graph):
    g = sha_graph
    assert g.number_of_nodes() == len(sha_profile.blocks)
    for b in sha_profile.blocks:
        d = g.nodes[b["id"]]
        assert (d["pc"], d["insns"], d["count"], d["tier"], d["function"]) == \
            (b["pc"], b["insns"], b["count"], b["tier"], b["function"])
        assert d["size"] == b["guest_bytes"] and d["host_bytes"] == b["host_bytes"]
        assert d["dyn_insns"] == b["count"] * b["insns"]
    assert g.graph["program"] == "sha256" and g.graph["instret"] == sha_profile.instret
    assert sum(d["dyn_insns"] for _, d in g.nodes(data=True)) == sha_profile.instret
    assert {k for *_, k in g.edges(data="kind")} <= set(analysis.EDGE_KINDS)
    # the per-kind counts of an edge add up to its count
    for *_, d in g.edges(data=True):
        assert d["count"] == sum(d[k] for k in analysis.EDGE_KINDS) > 0


def test_hottest_blocks_are_in_compress(sha_graph):
    hot = analysis.hot_subgraph(sha_graph, 3)
    assert {d["function"] for _, d in hot.nodes(data=True)} == {"compress"}
    # compress's three loops are self loops chained to themselves
    for n in hot:
        if hot.nodes[n]["count"] > SHA_COMPRESS_CALLS:
            assert hot.edges[n, n]["kind"] == "chained"
            assert hot.edges[n, n]["backward"]


def test_out_edges_never_exceed_executions(sha_profile, sha_graph):
    g = sha_graph
    deficit = 0
    for n, d in g.nodes(data=True):
        out = sum(c for *_, c in g.out_edges(n, data="count")) + d["untranslated_exits"]
        assert out <= d["count"], d["label"]
        deficit += d["count"] - out
    assert deficit == 1          # only the block that called exit_group has no successor


def test_single_chained_successor_takes_every_execution(sha_graph):
    g = sha_graph
    singles = [n for n in g if g.out_degree(n) == 1]
    checked = 0
    for n in singles:
        (_, v, d), = g.out_edges(n, data=True)
        if d["kind"] == "chained" and d["count"] == d["chained"]:
            assert d["count"] == g.nodes[n]["count"], g.nodes[n]["label"]
            checked += 1
    assert checked > 100


def test_incoming_transitions_account_for_every_execution(sha_profile):
    """Per guest pc (several translations of one pc share their chained in-edges), every
    execution but the very first block's was reached through a recorded transition."""
    into, runs = Counter(), Counter()
    for e in sha_profile.edges:
        into[e["dst_pc"]] += e["count"]
    for b in sha_profile.blocks:
        runs[b["pc"]] += b["count"]
    assert {pc: (runs[pc], into[pc]) for pc in runs if runs[pc] != into[pc]} == \
        {sha_profile.blocks[0]["pc"]: (1, 0)}
    assert sha_profile.blocks[0]["function"] == "_start"


@pytest.mark.parametrize("name", ["sha256", "qsort", "setjmp"])
def test_profiling_does_not_change_guest_output(name):
    prog = next(p for p in load_manifest()["programs"] if p["name"] == name)
    path = str(GUESTS / prog["binaries"]["musl"])
    args, env = prog["test"]["args"], prog.get("env") or {}
    plain = dbtlab.run(path, args, accel="llvm", env=env)
    p = analysis.profile_run(path, args, env=env)
    assert (p.result.stdout, p.result.stderr, p.result.status) == \
        (plain.stdout, plain.stderr, plain.status)
    assert p.instret == plain.instret == p.translated_insns
    assert p.result.stdout == (GUESTS / prog["expected_stdout"]).read_bytes()


def test_min_count_and_executed(sha_graph, sha_profile):
    ran = analysis.block_graph(sha_profile, min_count=1)
    assert set(ran) == set(analysis.executed(sha_graph)) == \
        {b["id"] for b in sha_profile.blocks if b["count"]}
    assert len(ran) < len(sha_graph)        # some translated blocks never ran


def test_function_graph(sha_graph):
    f = analysis.function_graph(sha_graph)
    assert max(f, key=lambda n: f.nodes[n]["dyn_insns"]) == "compress"
    assert sum(d["count"] for _, d in f.nodes(data=True)) == \
        sum(d["count"] for _, d in sha_graph.nodes(data=True))
    # compress is called from main (sha256_update inlined) and sha256_final, and returns
    # there: calls and returns balance
    calls = {u: c for u, _, c in f.in_edges("compress", data="count")}
    returns = {v: c for _, v, c in f.out_edges("compress", data="count")}
    assert set(calls) == {"main", "sha256_final"}
    assert calls == returns
    assert sum(calls.values()) == SHA_COMPRESS_CALLS
    assert not any(f.has_edge(n, n) for n in f)


def test_graphml_round_trip(sha_graph, tmp_path):
    path = tmp_path / "g.graphml"
    analysis.export(sha_graph, path)
    h = analysis.read_graphml(path)
    assert set(h) == set(sha_graph)
    assert set(h.edges) == set(sha_graph.edges)
    for n, d in sha_graph.nodes(data=True):
        for k in ("pc", "count", "insns", "function", "label", "tier"):
            assert h.nodes[n][k] == d[k]
        if d["host_bytes"] is None:
            assert "host_bytes" not in h.nodes[n]      # absent, not "None"
    for u, v, d in sha_graph.edges(data=True):
        assert {k: h.edges[u, v][k] for k in ("count", "kind", "backward", "chained")} == \
            {k: d[k] for k in ("count", "kind", "backward", "chained")}
    assert h.graph["program"] == "sha256"
    assert nx.read_graphml(path).number_of_nodes() == sha_graph.number_of_nodes()


def test_dot_export(sha_graph, tmp_path):
    hot = analysis.hot_subgraph(sha_graph, 12)
    path = tmp_path / "g.dot"
    analysis.export(hot, path)
    text = path.read_text()
    assert text.startswith('digraph "sha256" {') and text.rstrip().endswith("}")
    nodes = set(re.findall(r"^  n(\d+) \[label=", text, re.M))
    edges = re.findall(r'^  n(\d+) -> n(\d+) \[label="([^"]+)"', text, re.M)
    assert nodes == {str(n) for n in hot}
    assert {(int(u), int(v)) for u, v, _ in edges} == set(hot.edges)
    assert "compress+0xf4" in text


def test_export_refuses_unknown_extension(sha_graph, tmp_path):
    with pytest.raises(ValueError, match="unknown graph format .txt"):
        analysis.export(sha_graph, tmp_path / "g.txt")
