"""The snapshot store, the CLI and the Python API: metadata, content-addressed page sharing,
garbage collection, export/import, a writer killed mid-save (SIGKILL), one-line errors,
and savevm/loadvm from the command line across accelerators."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

import dbtlab
from dbtlab import snapshot as S
from dbtlab.runtime.vm import vmstate as V
from dbtlab.runtime.vm.snapshots import SnapshotStore, StoreError
from tests.conftest import ACCELS, GUESTS, ROOT
from tests.runtime.snapshot_kit import guest, resume

#: the engine that reaches a save point cheapest
CHEAP = "unicorn" if "unicorn" in ACCELS else "interp"


def _machine_at(name: str, n: int, accel: str = CHEAP, tmp_path=None, out=None):
    g = guest(name, tmpdir=tmp_path)
    m = g.machine(accel, out)
    res = m.run(stop_at=n)
    assert res.stopped and m.instret == n
    return g, m


# ---- the store -----------------------------------------------------------------------------
def test_metadata(tmp_path):
    db = tmp_path / "s.db"
    _g, m = _machine_at("sha256", 300_000)
    t0 = time.time()
    with SnapshotStore(str(db)) as st:
        info = st.savevm(m, "mid")
        assert st.list() == [info] and "mid" in st and st.info("mid") == info
        assert info.tag == "mid" and info.instret == 300_000 and info.accel == CHEAP
        assert abs(info.created - t0) < 60
        data = (GUESTS / "bin/sha256").read_bytes()
        assert info.program_path == str(GUESTS / "bin/sha256")
        assert info.program_sha256 == hashlib.sha256(data).hexdigest()
        assert info.dbtlab_version == dbtlab.__version__
        assert info.pages == len(V.capture(m).memory.pages) == info.new_pages
        assert info.size == st.export("mid", str(tmp_path / "mid.vm"))
        assert info.size == (tmp_path / "mid.vm").stat().st_size
    m.close()


def test_successive_snapshots_share_unchanged_pages(tmp_path):
    """Content addressing: a second snapshot of a mostly unchanged process adds few pages."""
    g, m = _machine_at("alloc", 600_000)
    with SnapshotStore(str(tmp_path / "s.db")) as st:
        distinct_a = len(set(V.capture_memory(m.mem).pages.values()))
        a = st.savevm(m, "a")
        m.run(stop_at=620_000)
        b = st.savevm(m, "b")
        m.run(stop_at=640_000)
        c = st.savevm(m, "c")
        # identical pages inside one snapshot are stored once too
        assert a.new_pages == distinct_a and a.pages > 50
        assert b.new_pages <= b.pages // 4 and c.new_pages <= c.pages // 4
        s = st.stats()
        assert s["pages"] == a.new_pages + b.new_pages + c.new_pages
        assert s["pages"] < a.pages + b.pages + c.pages
        assert s["page_refs"] == a.pages + b.pages + c.pages
        # every snapshot still comes back exactly
        for tag in "abc":
            assert st.load(tag).memory.pages  # hashes checked on load
        r, after = resume(st.load("b"), CHEAP)
        assert r.status == 0 and after
    m.close()


def test_delete_collects_unreferenced_pages(tmp_path):
    g, m = _machine_at("alloc", 600_000)
    with SnapshotStore(str(tmp_path / "s.db")) as st:
        a = st.savevm(m, "a")
        m.run(stop_at=700_000)
        distinct_b = len(set(V.capture_memory(m.mem).pages.values()))
        b = st.savevm(m, "b")
        freed = st.delete("a")
        assert 0 < freed <= a.pages
        s = st.stats()
        assert s["pages"] == distinct_b and s["page_refs"] == b.pages
        snap_b = st.load("b")
        assert snap_b.instret == 700_000
        assert st.delete("b") == distinct_b
        assert st.stats()["pages"] == 0 and st.list() == []
        with pytest.raises(StoreError, match="no snapshot 'b' in .* \\(it is empty\\)"):
            st.delete("b")
    m.close()


def test_tags_are_replaced_or_refused(tmp_path):
    _g, m = _machine_at("sha256", 100_000)
    with SnapshotStore(str(tmp_path / "s.db")) as st:
        st.savevm(m, "t")
        m.run(stop_at=200_000)
        st.savevm(m, "t")                                  # savevm replaces, like QEMU
        assert [i.instret for i in st.list()] == [200_000]
        with pytest.raises(StoreError, match="already exists"):
            st.save(V.capture(m), "t", replace=False)
        with pytest.raises(StoreError, match="bad snapshot tag"):
            st.save(V.capture(m), " spaced ")
    m.close()


def test_export_import_round_trip(tmp_path):
    _g, m = _machine_at("qsort", 500_000)
    snap = V.capture(m)
    with SnapshotStore(str(tmp_path / "a.db")) as a, SnapshotStore(str(tmp_path / "b.db")) as b:
        a.save(snap, "x")
        a.export("x", str(tmp_path / "x.vm"))
        info = b.import_stream(str(tmp_path / "x.vm"))
        assert info.tag == "x" and info.instret == 500_000
        got = b.load("x")
        assert got.memory.pages == snap.memory.pages and got.cpu == snap.cpu
        assert got.process == snap.process and got.memory.regions == snap.memory.regions
        # a corrupt stream is refused before anything is stored
        data = bytearray((tmp_path / "x.vm").read_bytes())
        data[len(data) // 2] ^= 4
        (tmp_path / "bad.vm").write_bytes(bytes(data))
        with pytest.raises(V.StreamError):
            b.import_stream(str(tmp_path / "bad.vm"), "bad")
        assert b.tags() == ["x"]
    m.close()


def test_older_stream_imports_and_exports_at_the_current_version(tmp_path):
    fixture = ROOT / "tests/fixtures/snapshots/hello-process-v1.vm"
    with SnapshotStore(str(tmp_path / "s.db")) as st:
        st.import_stream(str(fixture), "old")
        st.export("old", str(tmp_path / "new.vm"))
    assert V.read_file(str(tmp_path / "new.vm")).versions["process"] == \
        V.VMSTATE_PROCESS.version


def test_damage_inside_the_store_is_detected(tmp_path):
    db = tmp_path / "s.db"
    _g, m = _machine_at("sha256", 100_000)
    with SnapshotStore(str(db)) as st:
        st.savevm(m, "t")
    con = sqlite3.connect(db)
    con.execute("UPDATE pages SET data = ? WHERE id = (SELECT min(id) FROM pages)",
                (V.compress_page(b"\1" * 4096),))
    con.commit()
    con.close()
    with SnapshotStore(str(db)) as st:
        with pytest.raises(StoreError, match="snapshot 't' in .* is damaged: page"):
            st.load("t")
    m.close()


def test_not_a_store(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"hello world, not sqlite" * 100)
    with pytest.raises(StoreError, match="is not a dbtlab snapshot store"):
        SnapshotStore(str(junk))
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE t(x)")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="SQLite database but not a dbtlab snapshot store"):
        SnapshotStore(str(other))
    with pytest.raises(StoreError, match="no snapshot store at"):
        SnapshotStore(str(tmp_path / "missing.db"), create=False)
    assert not (tmp_path / "missing.db").exists()
    newer = tmp_path / "newer.db"
    SnapshotStore(str(newer)).close()
    con = sqlite3.connect(newer)
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    con.commit()
    con.close()
    with pytest.raises(V.VersionError, match="newer dbtlab"):
        SnapshotStore(str(newer))


_WRITER = textwrap.dedent("""
    import sys, time
    from dbtlab.runtime.vm import vmstate as V
    from dbtlab.runtime.vm.snapshots import SnapshotStore
    from tests.runtime.snapshot_kit import guest
    store = SnapshotStore(sys.argv[1])
    m = guest("hello").machine("interp")
    m.run(stop_at=3000)
    store.savevm(m, "first")
    print("FIRST", flush=True)
    m2 = guest("alloc").machine(sys.argv[2])
    m2.run(stop_at=600000)
    snap = V.capture(m2)
    def progress(done, total):
        if done == total // 2:
            print("MID", flush=True)
            time.sleep(120)
    store.save(snap, "second", progress=progress)
    print("NOT KILLED", flush=True)
""")


def test_writer_killed_mid_save_leaves_the_store_consistent(tmp_path):
    db = tmp_path / "s.db"
    p = subprocess.Popen([sys.executable, "-c", _WRITER, str(db), CHEAP], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "FIRST"
        assert p.stdout.readline().strip() == "MID"
        # the save transaction is open: its rollback journal is on disk
        assert (tmp_path / "s.db-journal").exists()
        p.send_signal(signal.SIGKILL)
        assert p.wait(30) == -signal.SIGKILL
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
        p.stderr.close()
    with SnapshotStore(str(db)) as st:                     # rolls the journal back
        assert st.tags() == ["first"]                       # nothing lost, nothing partial
        con = st.db
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        orphans = con.execute("SELECT count(*) FROM pages WHERE id NOT IN "
                              "(SELECT page_id FROM snapshot_pages)").fetchone()[0]
        assert orphans == 0
        assert con.execute("SELECT count(*) FROM sections").fetchone()[0] == 3
        r, after = resume(st.load("first"), "interp")
        assert r.status == 0 and after.endswith(b"hello, translator\n")
        _g, m = _machine_at("sha256", 100_000)
        st.savevm(m, "after")                               # and the store goes on working
        assert st.tags() == ["first", "after"]
        m.close()


# ---- the Python API ---------------------------------------------------------------------------
def test_python_api_run_resume_restore(tmp_path):
    db = str(tmp_path / "s.db")
    g = guest("sha256")
    full = S.run(g.path, g.args, store=db, save_at=[200_000, (400_000, "mid"), "600000:late"],
                 accel=CHEAP)
    assert full.saved == ["sha256-200000", "mid", "late"] and full.status == 0
    assert full.stdout == g.expected
    assert [i.tag for i in S.list_snapshots(db)] == full.saved
    for accel in ACCELS:
        r = S.resume(db, "mid", accel=accel)
        assert g.expected.endswith(r.stdout) and r.status == 0 and r.instret == full.instret
    m = S.loadvm(db, "late", accel="interp", stdout=os.open(os.devnull, os.O_WRONLY))
    assert m.instret == 600_000
    m.run(stop_at=700_000)
    S.restore(m, db, "mid")
    assert m.instret == 400_000 and m.run().instret == full.instret
    m.close()
    assert S.delete(db, "late") >= 0
    S.export(db, "mid", str(tmp_path / "mid.vm"))
    assert S.import_stream(db, str(tmp_path / "mid.vm"), "again").instret == 400_000
    r = S.resume(None, stream=str(tmp_path / "mid.vm"), accel=CHEAP)
    assert r.instret == full.instret
    with pytest.raises(StoreError, match="no snapshot 'nope'"):
        S.loadvm(db, "nope")


def test_python_api_save_every(tmp_path):
    db = str(tmp_path / "s.db")
    g = guest("crc32")
    r = S.run(g.path, g.args, store=db, every=100_000, accel=CHEAP)
    assert r.saved == [f"crc32-{k * 100_000}" for k in range(1, r.instret // 100_000 + 1)]
    # resuming and saving on: the counts go on from the snapshot's
    r2 = S.resume(db, "crc32-200000", accel=CHEAP, save_at=[250_000])
    assert r2.saved == ["crc32-250000"] and r2.instret == r.instret


def test_save_and_load_stream_files(tmp_path):
    _g, m = _machine_at("matmul", 100_000)
    size = S.save_stream(m, str(tmp_path / "m.vm"))
    assert size == (tmp_path / "m.vm").stat().st_size
    m2 = S.load_stream(str(tmp_path / "m.vm"), accel="interp",
                       stdout=os.open(os.devnull, os.O_WRONLY))
    assert m2.cpu.arch() == m.cpu.arch() and m2.instret == 100_000
    m.close()
    m2.close()


# ---- the command line ---------------------------------------------------------------------------
def dbtlab_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "dbtlab.runtime.cli", *args],
                          capture_output=True, timeout=timeout, cwd=ROOT)


def test_cli_savevm_then_loadvm_under_every_accelerator(tmp_path):
    db = str(tmp_path / "s.db")
    prog = str(GUESTS / "bin/qsort")
    full = dbtlab_cli("run", "--accel", CHEAP, "--clear-env", "--snapshot-store", db,
                      "--savevm-at", "300000", "--savevm-at", "700000:late", prog, "1000", "2")
    assert full.returncode == 0, full.stderr
    assert full.stdout == (GUESTS / "expected/qsort.out").read_bytes()
    # what the guest had written by instruction 700000
    head = dbtlab_cli("run", "--accel", CHEAP, "--clear-env", "--max-insns", "700000",
                      prog, "1000", "2")
    assert head.returncode == 0
    for accel in ACCELS:
        r = dbtlab_cli("run", "--snapshot-store", db, "--loadvm", "late", "--accel", accel)
        assert r.returncode == 0, r.stderr
        assert head.stdout + r.stdout == full.stdout, accel


def test_cli_loadvm_reproduces_a_signal_death(tmp_path):
    db = str(tmp_path / "s.db")
    prog = str(GUESTS / "bin/segv")
    full = dbtlab_cli("run", "--accel", "interp", "--clear-env", "--snapshot-store", db,
                      "--savevm-at", "1000:early", prog)
    r = dbtlab_cli("run", "--snapshot-store", db, "--loadvm", "early", "--accel", CHEAP)
    assert full.returncode == r.returncode == -signal.SIGSEGV
    assert r.stderr == full.stderr and b"SIGSEGV" in r.stderr


def test_cli_snapshot_commands(tmp_path):
    db = str(tmp_path / "s.db")
    prog = str(GUESTS / "bin/crc32")
    r = dbtlab_cli("run", "--accel", CHEAP, "--clear-env", "--snapshot-store", db,
                   "--savevm-every", "150000", prog, "4096", "2")
    assert r.returncode == 0, r.stderr
    ls = dbtlab_cli("snapshot", "list", db)
    lines = ls.stdout.decode().splitlines()
    assert lines[0].split()[:4] == ["TAG", "INSNS", "SIZE", "PAGES"]
    assert [ln.split()[0] for ln in lines[1:4]] == ["crc32-150000", "crc32-300000",
                                                    "crc32-450000"]
    assert "3 snapshot(s)" in lines[-1]
    ex = dbtlab_cli("snapshot", "export", db, "crc32-300000", "-o", str(tmp_path / "c.vm"))
    assert ex.returncode == 0 and (tmp_path / "c.vm").exists()
    im = dbtlab_cli("snapshot", "import", db, str(tmp_path / "c.vm"), "--tag", "copy")
    assert im.returncode == 0 and b"imported copy" in im.stdout
    de = dbtlab_cli("snapshot", "delete", db, "crc32-150000")
    assert de.returncode == 0 and b"deleted crc32-150000" in de.stdout
    tags = [ln.split()[0] for ln in
            dbtlab_cli("snapshot", "list", db).stdout.decode().splitlines()[1:-1]]
    assert tags == ["crc32-300000", "crc32-450000", "copy"]


@pytest.fixture(scope="module")
def error_files(tmp_path_factory):
    """A store with snapshot 't', its stream, a corrupted copy and a 'future' copy."""
    tmp_path = tmp_path_factory.mktemp("errors")
    _g, m = _machine_at("sha256", 10_000)
    with SnapshotStore(str(tmp_path / "s.db")) as st:
        st.savevm(m, "t")
        st.export("t", str(tmp_path / "t.vm"))
    m.close()
    data = bytearray((tmp_path / "t.vm").read_bytes())
    data[100] ^= 1
    (tmp_path / "bad.vm").write_bytes(bytes(data))
    good = (tmp_path / "t.vm").read_bytes()
    (tmp_path / "future.vm").write_bytes(good[:8] + b"\0\0\0\x07" + good[12:])
    return tmp_path


@pytest.mark.parametrize("args,message", [
    (["run", "--loadvm", "x"], "need --snapshot-store FILE"),
    (["run", "--snapshot-store", "{db}", "--loadvm", "nope"], "no snapshot 'nope' in"),
    (["run", "--snapshot-store", "{db}", "--savevm-at", "12x", "{prog}"],
     "expected N or N:TAG"),
    (["run", "--snapshot-store", "{db}", "--loadvm", "t", "--env", "A=1"],
     "--env cannot be used with --loadvm"),
    (["run", "--snapshot-store", "{db}", "--loadvm", "t", "{prog}", "extra"],
     "give no ARGS"),
    (["snapshot", "import", "{db}", "{bad}"], "checksum mismatch"),
    (["snapshot", "import", "{db}", "{future}"], "newer than this dbtlab reads"),
    (["snapshot", "list", "{bad}"], "is not a dbtlab snapshot store"),
    (["snapshot", "list", "{missing}"], "no snapshot store at"),
    (["snapshot", "export", "{db}", "nope", "-o", "{out}"], "no snapshot 'nope'"),
    (["run", "--snapshot-store", "{db}", "--loadvm", "t", "{other}"],
     "refusing to load it into a different program"),
])
def test_cli_errors_are_one_line(error_files, args, message):
    tmp_path = error_files
    db = str(tmp_path / "s.db")
    prog = str(GUESTS / "bin/sha256")
    subst = {"{db}": db, "{prog}": prog, "{bad}": str(tmp_path / "bad.vm"),
             "{future}": str(tmp_path / "future.vm"), "{missing}": str(tmp_path / "no.db"),
             "{out}": str(tmp_path / "o.vm"), "{other}": str(GUESTS / "bin/hello")}
    r = dbtlab_cli(*[subst.get(a, a) for a in args])
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert err.startswith("dbtlab: ") and err.count("\n") == 1 and "Traceback" not in err
    assert message in err


def test_diff_for_bisecting_engines(tmp_path):
    """Checkpoints under the reference engine, each window replayed under every engine and
    compared with the next checkpoint: identical; a planted difference is named."""
    db = str(tmp_path / "s.db")
    g = guest("sha256")
    S.run(g.path, g.args, store=db, every=200_000, accel="interp")
    for accel in ACCELS:
        m = S.loadvm(db, "sha256-200000", accel=accel, stdout=os.open(os.devnull, os.O_WRONLY))
        m.run(stop_at=400_000)
        S.savevm(m, db, f"{accel}-400000")
        assert S.diff(db, "sha256-400000", f"{accel}-400000") == []
        m.cpu.x[10] ^= 4
        m.mem.poke(m.cpu.x[2] & ~7, b"\xAA")
        S.savevm(m, db, f"{accel}-planted")
        lines = S.diff(db, "sha256-400000", f"{accel}-planted")
        assert any(ln.startswith("cpu.x10 (a0): ") for ln in lines)
        assert any(ln.startswith("memory page ") and "1 bytes differ" in ln for ln in lines)
        m.close()
    r = dbtlab_cli("snapshot", "diff", db, "sha256-400000", "llvm-planted")
    assert r.returncode == 1 and b"cpu.x10 (a0)" in r.stdout
    r = dbtlab_cli("snapshot", "diff", db, "sha256-400000", "interp-400000")
    assert r.returncode == 0 and b"identical machine state" in r.stdout
