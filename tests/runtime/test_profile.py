"""Profiles: counters only when asked, consistent with what ran, output unchanged."""

from __future__ import annotations

import json
from collections import Counter

import dbtlab
from dbtlab.runtime.profile import FORMAT, VERSION
from tests.conftest import REGION_TIERS, GUESTS

SHA = str(GUESTS / "bin/sha256")


def _profiled(args):
    from dbtlab.runtime.config import RunConfig
    from dbtlab.runtime.machine import Machine
    m = Machine(SHA, [SHA, *args], config=RunConfig(accel="llvm", profile=True),
                stdout=open("/dev/null", "w").fileno())
    try:
        res = m.run()
        return res, m.profile(res)
    finally:
        m.close()


def test_profile_is_consistent_with_execution():
    res, doc = _profiled(["2048", "4"])
    assert (doc["format"], doc["version"]) == (FORMAT, VERSION)
    assert doc["run"]["instret"] == res.instret
    blocks = {b["id"]: b for b in doc["blocks"]}
    # every instruction retired in translated code is some block's execution
    assert sum(b["count"] * b["insns"] for b in blocks.values()) == res.instret
    out = Counter()
    for e in doc["edges"]:
        out[e["src"]] += e["count"]
        assert e["kind"] in ("chained", "indirect", "dispatch", "exit")
    for bid, n in out.items():
        assert n <= blocks[bid]["count"]
    # the hottest blocks are SHA-256's compression function
    hot = sorted(blocks.values(), key=lambda b: -b["count"] * b["insns"])[:3]
    assert all(b["function"] == "compress" for b in hot)
    json.dumps(doc)       # serialisable


def test_profiling_does_not_change_guest_behaviour():
    plain = dbtlab.run(SHA, ["2048", "4"], accel="llvm")
    prof = dbtlab.run(SHA, ["2048", "4"], accel="llvm", profile=True)
    assert (prof.stdout, prof.status, prof.instret) == (plain.stdout, plain.status,
                                                         plain.instret)


def test_cli_profile_requires_llvm(tmp_path):
    from tests.runtime.test_cli import dbtlab as cli
    r = cli("run", "--accel", "interp", "--profile", str(tmp_path / "p.json"), SHA, "10", "1")
    assert r.returncode == 1
    assert r.stderr.decode().strip() == \
        "dbtlab: --profile needs --accel llvm (profiles count translated blocks)"
    r = cli("run", "--profile", str(tmp_path / "p.json.gz"), SHA, "10", "1")
    assert r.returncode == 0 and (tmp_path / "p.json.gz").stat().st_size > 100


def test_profile_shows_regions_and_keeps_counting_inside_them():
    r = dbtlab.run(SHA, ["2048", "4"], accel="llvm", profile=True, tiers=REGION_TIERS,
                   region_threshold=100, region_workers=0)
    doc = r.profile
    assert doc["regions"], "sha256's loops become regions at threshold 100"
    blocks = {b["id"]: b for b in doc["blocks"]}
    for reg in doc["regions"]:
        assert all(blocks[b]["region"] is not None for b in reg["blocks"])
    assert sum(b["count"] * b["insns"] for b in blocks.values()) == r.instret
    events = {e["event"] for e in doc["chain_events"]}
    assert "link" in events and "unlink" in events     # entries re-linked to regions
