"""Profiles, graphs, reports and the hot-subgraph figure show the second tier: which blocks
were compiled into which region."""

from __future__ import annotations

from tests.conftest import REGION_TIERS

import matplotlib

matplotlib.use("Agg")

from dbtlab import analysis  # noqa: E402
from tests.analysis.conftest import SHA, SHA_ARGS  # noqa: E402


def test_region_membership_in_profile_graph_report_and_figure(tmp_path):
    p = analysis.profile_run(SHA, SHA_ARGS, tiers=REGION_TIERS, region_threshold=50,
                             region_workers=0)
    assert p.regions, "sha256's loops at threshold 50 become regions"
    g = analysis.block_graph(p)
    members = {bid for r in p.regions for bid in r["blocks"]}
    assert {n for n, r in g.nodes(data="region") if r} == members
    for r in p.regions:
        assert all(g.nodes[b]["region"] == r["id"] for b in r["blocks"])
        assert g.nodes[r["blocks"][0]]["pc"] == r["entry"]
    # exact counts survive the switch to regions: every execution is a transition in
    assert p.instret == p.translated_insns == p.result.instret
    text = analysis.summary(p)
    assert f"second-tier regions installed: {len(p.regions)}" in text
    assert "R1 " in text and "compress" in text
    fig = analysis.plot_hot_subgraph(p, top=12)
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert any(" R" in s for s in labels)
    assert "in a region (Rn)" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    fig.savefig(tmp_path / "hot.png")
