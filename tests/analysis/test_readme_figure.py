"""The README's analysis section: its figure is committed, and its commands are the CLI's."""

from __future__ import annotations

import re

from tests.conftest import ROOT


def test_readme_shows_a_committed_figure():
    text = (ROOT / "README.md").read_text()
    images = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", text)
    assert "docs/figures/sha256_hot_subgraph.png" in images
    for img in images:
        data = (ROOT / img).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_readme_analysis_commands_parse():
    from dbtlab.runtime.cli import build_parser
    text = (ROOT / "README.md").read_text().split("## Profiles, graphs and reports")[1]
    cmds = re.findall(r"^dbtlab (graph|report) (.*?)(?:\s+#.*)?$", text, re.M)
    assert {c for c, _ in cmds} == {"graph", "report"}
    for cmd, rest in cmds:
        a = build_parser().parse_args([cmd, *rest.split()])
        assert a.command == cmd and a.profile == "sha256.json"
