"""dbtlab graph / dbtlab report: the figures and exports exist and are real, and a bad
profile gets one clear line and exit status 1."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
from matplotlib.image import imread

from dbtlab import analysis
from dbtlab.runtime.cli import main
from tests.analysis.synthetic import diamond_loop


def assert_real_png(path: Path, min_bytes: int = 10_000) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    assert len(data) > min_bytes, (path, len(data))
    img = imread(path)
    assert img.shape[0] > 300 and img.shape[1] > 500
    assert img[..., :3].std() > 0.02           # not a blank canvas


def cli(*args, capsys=None):
    rc = main([str(a) for a in args])
    out = capsys.readouterr() if capsys else None
    return rc, out


def test_graph_png_end_to_end(sha_profile_file, tmp_path):
    """As a user runs it: a separate process, a drawing of the hot blocks."""
    png = tmp_path / "hot.png"
    r = subprocess.run([sys.executable, "-m", "dbtlab.runtime.cli", "graph",
                        str(sha_profile_file), "-o", str(png), "--top", "12"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert r.stdout.strip() == f"wrote {png} (the 12 hottest blocks)"
    assert_real_png(png)


@pytest.mark.parametrize("ext,magic", [("svg", b"<?xml"), ("pdf", b"%PDF"),
                                       ("graphml", b"<?xml"), ("dot", b"digraph")])
def test_graph_formats(sha_profile_file, tmp_path, capsys, ext, magic):
    out = tmp_path / f"g.{ext}"
    rc, o = cli("graph", sha_profile_file, "-o", out, capsys=capsys)
    assert rc == 0, o.err
    assert out.read_bytes().startswith(magic) and out.stat().st_size > 2000
    if ext == "graphml":
        g = analysis.read_graphml(out)
        assert len(g) == len(analysis.load(sha_profile_file).blocks)   # every block


def test_graph_top_limits_an_export(sha_profile_file, tmp_path, capsys):
    out = tmp_path / "g.graphml"
    rc, o = cli("graph", sha_profile_file, "-o", out, "--top", "5", capsys=capsys)
    assert rc == 0 and "5 blocks" in o.out
    assert len(analysis.read_graphml(out)) == 5


def test_report_prints_summary_and_writes_figures(sha_profile_file, tmp_path, capsys):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(_bench_results()))
    rc, o = cli("report", sha_profile_file, "-o", tmp_path / "figs", "--benchmarks", bench,
                capsys=capsys)
    assert rc == 0, o.err
    assert o.err == ""
    text = o.out
    assert text.startswith("sha256 2048 4\n")
    for part in ("accel llvm", "exits to Python", "coverage of dynamic instructions",
                 "hottest blocks", "hot loops", "NET trace candidates", "loop-rule regions"):
        assert part in text
    hot = text.split("hottest blocks (top 10)")[1].splitlines()[2]
    assert hot.split()[0].startswith("compress+")
    for name in (*analysis.FIGURES, "benchmarks"):
        assert_real_png(tmp_path / "figs" / f"{name}.png", 8_000)


def test_report_without_figures(sha_profile_file, capsys):
    rc, o = cli("report", sha_profile_file, "--top", "3", capsys=capsys)
    assert rc == 0 and "figures" not in o.out
    assert len(o.out.split("hottest blocks (top 3)")[1].split("\n\n")[0].splitlines()) == 5


def _bench_results() -> dict:
    def eng(t):
        return {"times": [t, t, t], "median": t, "output_ok": True, "stats": None}
    progs = {"sha256": {"args": ["1"], "engines": {"llvm": eng(0.9), "qemu": eng(1.3),
                                                   "unicorn": eng(8.0), "native": eng(0.6)}},
             "qsort": {"args": ["1"], "engines": {"llvm": eng(1.1), "qemu": eng(1.2),
                                                  "unicorn": eng(7.0)}}}
    for p in progs.values():
        for peer in ("qemu", "unicorn", "native"):
            if peer in p["engines"]:
                p[f"llvm/{peer}"] = p["engines"]["llvm"]["median"] / p["engines"][peer]["median"]
    return {"engines": ["llvm", "qemu", "unicorn", "native"], "reps": 3, "programs": progs}


def test_benchmark_tables():
    res = _bench_results()
    assert analysis.engines_of(res) == ["llvm", "qemu", "unicorn", "native"]
    r = analysis.ratios(res)
    assert r["qemu"]["sha256"] == pytest.approx(res["programs"]["sha256"]["llvm/qemu"])
    assert set(r["native"]) == {"sha256"}
    assert analysis.geomean([2.0, 8.0]) == pytest.approx(4.0)


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = json.dumps(diamond_loop()).encode()
    v2 = diamond_loop()
    v2["version"] = 2
    other = diamond_loop()
    other["format"] = "chrome-trace"
    files = {"truncated.json": (good[: len(good) // 3], "truncated JSON"),
             "version2.json": (json.dumps(v2).encode(),
                               "profile format version 2 is not supported"),
             "format.json": (json.dumps(other).encode(), "not a dbtlab profile"),
             "truncated.json.gz": (gzip.compress(good)[:50], "damaged gzip data")}
    out = {}
    for name, (data, msg) in files.items():
        (tmp_path / name).write_bytes(data)
        out[name] = (tmp_path / name, msg)
    out["missing.json"] = (tmp_path / "missing.json", "cannot read")
    return out


@pytest.mark.parametrize("command", ["graph", "report"])
def test_bad_profile_gives_one_line(tmp_path, capsys, command):
    for name, (path, msg) in _bad_files(tmp_path).items():
        extra = ["-o", tmp_path / "x.png"] if command == "graph" else []
        rc, o = cli(command, path, *extra, capsys=capsys)
        assert rc == 1, name
        lines = o.err.splitlines()
        assert len(lines) == 1, (name, o.err)
        assert lines[0].startswith(f"dbtlab: {path}: " if "cannot" not in msg else
                                   "dbtlab: cannot read ")
        assert msg in lines[0], lines[0]
        assert o.out == ""
        assert not (tmp_path / "x.png").exists()


def test_bad_profile_from_a_real_process(tmp_path):
    bad = tmp_path / "p.json"
    bad.write_text('{"format": "dbtlab-profile", "version": 1, "blocks": [')
    r = subprocess.run([sys.executable, "-m", "dbtlab.runtime.cli", "report", str(bad)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        f"dbtlab: {bad}: truncated JSON (Expecting value: line 1 column 55)"]
    assert r.stdout == ""


def test_graph_refuses_unknown_output_format(sha_profile_file, tmp_path, capsys):
    rc, o = cli("graph", sha_profile_file, "-o", tmp_path / "g.jpeg", capsys=capsys)
    assert rc == 1
    assert o.err.startswith("dbtlab: graph: cannot tell the format of ")
    assert len(o.err.splitlines()) == 1
