"""Loading profiles: both file forms, the API result, and one clear error for anything else."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import pytest

from dbtlab import analysis
from dbtlab.analysis import ProfileError
from tests.analysis.synthetic import diamond_loop


def test_reader_and_writer_agree_on_the_format():
    from dbtlab.runtime.profile import FORMAT, VERSION
    assert analysis.FORMAT == FORMAT
    assert VERSION in analysis.SUPPORTED_VERSIONS


def test_json_and_gzip_files_load_the_same(sha_profile, sha_profile_file, tmp_path):
    gz = tmp_path / "p.json.gz"
    sha_profile.save(gz)
    assert gzip.decompress(gz.read_bytes())[:1] == b"{"
    a, b = analysis.load(sha_profile_file), analysis.load(str(gz))
    assert a.doc == b.doc == json.loads(json.dumps(sha_profile.doc))
    # gzip is recognised by content, whatever the file is called
    odd = tmp_path / "p.data"
    odd.write_bytes(gz.read_bytes())
    assert analysis.load(odd).doc == a.doc


def test_from_result_keeps_the_run(sha_result, sha_profile):
    assert sha_profile.result is sha_result
    assert sha_profile.instret == sha_result.instret
    assert sha_profile.name == "sha256"
    assert sha_profile.argv[1:] == ["2048", "4"]
    assert sha_profile.translated_insns == sha_result.instret   # all of it ran translated
    assert sha_profile.wall == sha_result.wall
    assert 0 < sha_profile.translation_seconds < sha_profile.wall


def test_unprofiled_result_is_refused():
    class R:
        profile = None
        instret = 1
    with pytest.raises(ProfileError, match="profile=True"):
        analysis.from_result(R())


def _write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())
    return p


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d.update(format="perf-script"), "not a dbtlab profile (format 'perf-script'"),
    (lambda d: d.pop("format"), "not a dbtlab profile (format None"),
    (lambda d: d.update(version=2), "profile format version 2 is not supported (this "
                                    "dbtlab reads version 1)"),
    (lambda d: d.update(version="1"), "version '1' is not supported"),
    (lambda d: d.pop("blocks"), "missing or invalid 'blocks' section"),
    (lambda d: d["blocks"][0].pop("count"), "block record 0 lacks one of"),
    (lambda d: d["blocks"][1].update(id=1), "duplicate block id 1"),
    (lambda d: d["edges"][0].update(kind="jump"), "edge record 0 has unknown kind 'jump'"),
    (lambda d: d["edges"][0].update(dst=99), "edge record 0 refers to a block"),
])
def test_invalid_documents(tmp_path, mutate, message):
    doc = diamond_loop()
    mutate(doc)
    with pytest.raises(ProfileError) as e:
        analysis.load(_write(tmp_path, "p.json", doc))
    assert str(e.value).startswith(str(tmp_path / "p.json") + ": ")
    assert message in str(e.value)


def test_damaged_files(tmp_path):
    good = json.dumps(diamond_loop()).encode()
    cases = {"trunc.json": (good[:len(good) // 2], "truncated JSON"),
             "bad.json": (b'{"format": nope}', "malformed JSON"),
             "empty.json": (b"", "empty file"),
             "bin.json": (b"\xff\xfe\x00garbage", "not a JSON file"),
             "list.json": (b"[1, 2]", "not a dbtlab profile (a JSON list"),
             "trunc.json.gz": (gzip.compress(good)[:40], "damaged gzip data")}
    for name, (data, message) in cases.items():
        with pytest.raises(ProfileError, match=message.replace("(", r"\(")):
            analysis.load(_write(tmp_path, name, data))
    with pytest.raises(ProfileError, match="cannot read .*missing.json: No such file"):
        analysis.load(tmp_path / "missing.json")


def test_analysis_never_imports_the_jit(sha_profile_file, tmp_path):
    """analysis/ reads the profile format and the public API only."""
    code = f"""
import sys
from dbtlab import analysis
p = analysis.load({str(sha_profile_file)!r})
g = analysis.block_graph(p)
analysis.hot_loops(g); analysis.net_traces(g); analysis.loop_regions(g)
analysis.summary(p)
from dbtlab.analysis import benchmarks, plots, report, timing   # every module
plots.plot_hot_subgraph(g, 10).savefig({str(tmp_path / "g.png")!r})
plots.plot_translation(p)
analysis.export(g, {str(tmp_path / "g.graphml")!r})
bad = sorted(m for m in sys.modules if m.startswith(("dbtlab.ir", "dbtlab.translator",
                                                     "dbtlab.runtime", "llvmlite", "unicorn")))
print(" ".join(bad))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ""
