"""Integrity of saved machine state, in the snapshot store and in streams.

Every stored section and page is checked when it is read: a flipped bit, a deleted or
swapped row is reported as damage (one line naming the snapshot and what is damaged),
never loaded. SQLite's own errors and values SQLite cannot hold (an instruction count
>= 2**63, a path that is not UTF-8, a tag with a lone surrogate) are the store's errors or
round-trip exactly. A program or file a snapshot names is opened only if it is what it
should be (never a FIFO, a device, a socket, a directory or the host's /proc). Declared
sizes never drive an allocation or a loop beyond the data present. Two fuzz targets:
mutated streams and mutated store files."""

from __future__ import annotations

import os
import random
import shutil
import socket
import sqlite3
import struct
import subprocess
import sys
import textwrap
import tracemalloc

import pytest

from dbtlab import snapshot as S
from dbtlab.runtime.errors import DbtError
from dbtlab.runtime.vm import vmstate as V
from dbtlab.runtime.vm.snapshots import SCHEMA_VERSION, SnapshotStore, StoreError
from tests.conftest import GUESTS, ROOT
from tests.runtime.snapshot_kit import Out, Sec, frame, guest, resume, sections

HELLO = str(GUESTS / "bin/hello")


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "dbtlab.runtime.cli", *args],
                          capture_output=True, timeout=timeout, cwd=ROOT)


def assert_one_line_error(r, *needles: str) -> str:
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 1, err
    assert err.startswith("dbtlab: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err
    return err


def one_line(e: BaseException) -> str:
    msg = str(e)
    assert msg and "\n" not in msg
    return msg


def same(a: V.VMSnapshot, b: V.VMSnapshot) -> bool:
    return (a.program == b.program and a.cpu == b.cpu and a.process == b.process
            and a.memory.regions == b.memory.regions and a.memory.pages == b.memory.pages
            and a.versions == b.versions)


def with_cpu(snap: V.VMSnapshot, **cpu) -> V.VMSnapshot:
    return V.VMSnapshot(snap.program, {**snap.cpu, **cpu}, snap.process, snap.memory)


def with_program(snap: V.VMSnapshot, **program) -> V.VMSnapshot:
    return V.VMSnapshot({**snap.program, **program}, snap.cpu, snap.process, snap.memory)


# ---- a small machine saved twice into a store -----------------------------------------------
@pytest.fixture(scope="module")
def hello():
    """Snapshots of hello at 5000 and 9000 instructions (its stdout goes to a file)."""
    out = Out()
    m = guest("hello").machine("interp", out)
    m.run(stop_at=5000)
    a = V.capture(m)
    m.run(stop_at=9000)
    b = V.capture(m)
    m.close()
    out.close()
    return a, b


@pytest.fixture(scope="module")
def base_store(tmp_path_factory, hello):
    path = tmp_path_factory.mktemp("store") / "base.db"
    with SnapshotStore(str(path)) as st:
        st.save(hello[0], "a")
        st.save(hello[1], "b")
    with SnapshotStore(str(path)) as st:
        ref = {t: st.load(t) for t in ("a", "b")}
    return path, ref


@pytest.fixture
def store(tmp_path, base_store):
    path = tmp_path / "s.db"
    shutil.copy(base_store[0], path)
    return str(path)


def sql(path: str, *statements) -> None:
    con = sqlite3.connect(path)
    for st in statements:
        if isinstance(st, tuple):
            con.execute(*st)
        else:
            con.execute(st)
    con.commit()
    con.close()


SID_A = "(SELECT id FROM snapshots WHERE tag = 'a')"


def flip_section_bit(path: str, name: str, byte: int, bit: int = 0) -> None:
    con = sqlite3.connect(path)
    (payload,) = con.execute(f"SELECT payload FROM sections WHERE snapshot_id = {SID_A} AND "
                             "name = ?", (name,)).fetchone()
    p = bytearray(payload)
    p[byte] ^= 1 << bit
    con.execute(f"UPDATE sections SET payload = ? WHERE snapshot_id = {SID_A} AND name = ?",
                (bytes(p), name))
    con.commit()
    con.close()


# ---- every stored section and page is verified ----------------------------------------------
@pytest.mark.parametrize("name,byte", [("cpu", -1), ("cpu", 8 * 10), ("program", -1),
                                       ("process", 40)])
def test_a_flipped_bit_in_a_stored_section_is_refused(store, base_store, name, byte):
    """The low bit of the instruction count, of a0, of the uid, in the process section:
    each decodes fine, so only the section's checksum can tell."""
    flip_section_bit(store, name, byte)
    with SnapshotStore(store) as st:
        with pytest.raises(StoreError) as e:
            st.load("a")
        assert one_line(e.value) == (f"snapshot 'a' in {store} is damaged: section '{name}' "
                                     "does not match its checksum")
        assert same(st.load("b"), base_store[1]["b"])


def test_cli_refuses_a_damaged_store_in_one_line(store, tmp_path):
    flip_section_bit(store, "cpu", -1)              # the instruction count: runs "fine"
    r = cli("run", "--snapshot-store", store, "--loadvm", "a", "--accel", "interp")
    assert_one_line_error(r, "snapshot 'a'", "section 'cpu' does not match its checksum")
    assert r.stdout == b""
    r = cli("snapshot", "export", store, "a", "-o", str(tmp_path / "a.vm"))
    assert_one_line_error(r, "snapshot 'a'", "is damaged")
    assert not (tmp_path / "a.vm").exists()
    r = cli("snapshot", "diff", store, "a", "b")
    assert_one_line_error(r, "section 'cpu'")
    r = cli("run", "--snapshot-store", store, "--loadvm", "b", "--accel", "interp")
    assert r.returncode == 0, r.stderr


def test_a_deleted_page_row_is_refused(store):
    """Before: the page silently became a zero page."""
    con = sqlite3.connect(store)
    pn, pid = con.execute(f"SELECT pn, page_id FROM snapshot_pages WHERE snapshot_id = {SID_A}"
                          " ORDER BY pn LIMIT 1").fetchone()
    con.execute("DELETE FROM pages WHERE id = ?", (pid,))
    con.commit()
    con.close()
    with SnapshotStore(store) as st:
        with pytest.raises(StoreError, match=rf"snapshot 'a' in .* is damaged: page "
                                             rf"{pn:#x} is missing from the store$"):
            st.load("a")


@pytest.mark.parametrize("damage", [
    f"DELETE FROM snapshot_pages WHERE snapshot_id = {SID_A} AND pn = (SELECT max(pn) FROM "
    f"snapshot_pages WHERE snapshot_id = {SID_A})",
    # another stored page (valid against its own hash) in place of the right one
    f"UPDATE snapshot_pages SET page_id = (SELECT max(id) FROM pages) WHERE snapshot_id = "
    f"{SID_A} AND pn = (SELECT min(pn) FROM snapshot_pages WHERE snapshot_id = {SID_A})",
    f"INSERT INTO snapshot_pages SELECT snapshot_id, pn + 1, page_id FROM snapshot_pages "
    f"WHERE snapshot_id = {SID_A} AND pn = (SELECT max(pn) FROM snapshot_pages WHERE "
    f"snapshot_id = {SID_A})",
], ids=["reference-deleted", "reference-swapped", "reference-added"])
def test_page_list_damage_is_refused(store, damage):
    sql(store, damage)
    with SnapshotStore(store) as st:
        with pytest.raises(StoreError, match="snapshot 'a' in .* is damaged: its page list "
                                             "does not match its checksum"):
            st.load("a")
        st.load("b")


@pytest.mark.parametrize("damage", [
    "UPDATE snapshots SET instret = instret + 1 WHERE tag = 'a'",
    "UPDATE snapshots SET program_path = '/elsewhere/hello' WHERE tag = 'a'",
    "memory map",                        # its first region one page longer
    "UPDATE sections SET checksum = NULL WHERE name = 'cpu' AND snapshot_id = " + SID_A,
], ids=["instret", "program-path", "memory-map", "no-checksum"])
def test_record_damage_is_refused(store, damage):
    if damage == "memory map":
        con = sqlite3.connect(store)
        (mm,) = con.execute("SELECT memory_map FROM snapshots WHERE tag = 'a'").fetchone()
        _first, n = struct.unpack_from(">II", mm, 5)
        mm = mm[:9] + struct.pack(">I", n + 1) + mm[13:]
        con.execute("UPDATE snapshots SET memory_map = ? WHERE tag = 'a'", (mm,))
        con.commit()
        con.close()
    else:
        sql(store, damage)
    with SnapshotStore(store) as st:
        with pytest.raises(StoreError, match="snapshot 'a' in .* is damaged: (its record|"
                                             "section 'cpu' does not match)"):
            st.load("a")


def downgrade_to_schema_1(path: str) -> None:
    """What a store written before the checksums looks like (same tables, minus the
    columns schema 2 added)."""
    sql(path, "ALTER TABLE sections DROP COLUMN checksum",
        "ALTER TABLE snapshots DROP COLUMN checksum",
        "ALTER TABLE snapshots DROP COLUMN pages_digest",
        "UPDATE meta SET value = '1' WHERE key = 'schema'")


def schema_of(path: str) -> tuple[str, set]:
    con = sqlite3.connect(path)
    schema = con.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0]
    cols = {r[1] for r in con.execute("PRAGMA table_info(sections)")}
    nulls = con.execute("SELECT count(*) FROM sections WHERE checksum IS NULL").fetchone()[0] \
        if "checksum" in cols else None
    con.close()
    return schema, cols, nulls


def test_a_previous_schema_store_loads_and_is_upgraded_by_a_save(store, base_store, hello,
                                                                  tmp_path):
    assert SCHEMA_VERSION == 2
    downgrade_to_schema_1(store)
    damaged = str(tmp_path / "damaged.db")
    shutil.copy(store, damaged)
    with SnapshotStore(store) as st:
        assert st.schema == 1
        for t in ("a", "b"):
            assert same(st.load(t), base_store[1][t])
        assert [i.tag for i in st.list()] == ["a", "b"]
    # still checked where it can be: pages against their keys, the page count
    sql(damaged, f"DELETE FROM snapshot_pages WHERE snapshot_id = {SID_A} AND pn = (SELECT "
                 f"max(pn) FROM snapshot_pages WHERE snapshot_id = {SID_A})")
    with SnapshotStore(damaged) as st:
        with pytest.raises(StoreError, match="snapshot 'a' .* is damaged: .*pages listed"):
            st.load("a")
        # a save would bless the damage: the upgrade refuses, naming it, and changes nothing
        with pytest.raises(StoreError, match="cannot upgrade snapshot store .* from schema "
                                             "version 1 to 2: snapshot 'a' .* is damaged"):
            st.save(hello[1], "c")
    assert schema_of(damaged)[0] == "1"
    with SnapshotStore(damaged) as st:
        assert st.tags() == ["a", "b"]
    # the first save upgrades, in its transaction; everything is then checksummed
    with SnapshotStore(store) as st:
        st.save(hello[1], "c")
        assert st.schema == 2
    schema, cols, nulls = schema_of(store)
    assert schema == "2" and "checksum" in cols and nulls == 0
    with SnapshotStore(store) as st:
        for t in ("a", "b"):
            assert same(st.load(t), base_store[1][t])
        assert same(st.load("c"), base_store[1]["b"])
    flip_section_bit(store, "cpu", -1)
    with SnapshotStore(store) as st:
        with pytest.raises(StoreError, match="section 'cpu' does not match its checksum"):
            st.load("a")


# ---- SQLite errors and values SQLite cannot hold --------------------------------------------
def corrupt_a_leaf(path: str, table: str) -> None:
    """An impossible cell count in a middle leaf page of the table: SQLite reports the
    damage only when a row there is read ("database disk image is malformed"), after the
    query has started and earlier rows were returned."""
    con = sqlite3.connect(path)
    page_size = con.execute("PRAGMA page_size").fetchone()[0]
    leaves = [r[0] for r in con.execute("SELECT pageno FROM dbstat WHERE name = ? AND "
                                        "pagetype = 'leaf' ORDER BY pageno", (table,))]
    con.close()
    assert len(leaves) >= 3
    with open(path, "r+b") as f:
        f.seek((leaves[len(leaves) // 2] - 1) * page_size + 3)
        f.write(b"\xff\xff")


def test_sqlite_errors_while_rows_are_read_are_store_errors(store, tmp_path):
    corrupt_a_leaf(store, "pages")
    with SnapshotStore(store) as st:
        st.list()
        with pytest.raises(StoreError, match="database disk image is malformed") as e:
            st.load("a")
        assert one_line(e.value).startswith(f"snapshot store {store}: ")
    r = cli("snapshot", "export", store, "a", "-o", str(tmp_path / "x.vm"))
    assert_one_line_error(r, "database disk image is malformed")
    r = cli("run", "--snapshot-store", store, "--loadvm", "b", "--accel", "interp")
    assert_one_line_error(r, "database disk image is malformed")
    # not a database at all
    junk = tmp_path / "junk.db"
    junk.write_bytes(bytes(range(256)) * 32)
    with pytest.raises(StoreError, match="is not a dbtlab snapshot store"):
        SnapshotStore(str(junk))
    # a store path that is a FIFO is never opened (SQLite would wait on it)
    os.mkfifo(tmp_path / "fifo.db")
    with pytest.raises(StoreError, match="is a FIFO, not a snapshot store"):
        SnapshotStore(str(tmp_path / "fifo.db"))


def test_an_sqlite_message_spanning_lines_is_one_line(store):
    """A malformed schema: SQLite's message quotes the table's SQL with its newlines."""
    con = sqlite3.connect(store)
    con.execute("PRAGMA writable_schema = ON")
    con.execute("UPDATE sqlite_master SET sql = replace(sql, 'pages(', '`ges(') "
                "WHERE name = 'pages'")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="malformed database schema") as e:
        SnapshotStore(store)
    one_line(e.value)
    assert_one_line_error(cli("snapshot", "list", store), "malformed database schema")


def test_stored_text_that_is_not_utf8_is_a_store_error(store):
    """A TEXT value that is not UTF-8 in a row is an sqlite3 error, but in the schema
    table sqlite3 raises UnicodeDecodeError (found by the long store-file fuzz run)."""
    sql(store, "UPDATE snapshots SET tag = CAST(X'62ff' AS TEXT) WHERE tag = 'b'")
    with SnapshotStore(store) as st:
        with pytest.raises(StoreError, match="Could not decode to UTF-8") as e:
            st.list()
        one_line(e.value)
        assert same(st.load("a"), st.load("a"))
    con = sqlite3.connect(store)
    con.execute("PRAGMA writable_schema = ON")
    con.execute("UPDATE sqlite_master SET name = CAST(X'6d65ff61' AS TEXT) WHERE name = "
                "'meta'")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="is not a dbtlab snapshot store .*can't decode") as e:
        SnapshotStore(store)
    one_line(e.value)
    assert_one_line_error(cli("snapshot", "list", store), "can't decode byte 0xff")


def test_a_locked_store_is_a_store_error(store, hello):
    other = sqlite3.connect(store, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match="locked"):
            SnapshotStore(store, timeout=0.05)
    finally:
        other.execute("ROLLBACK")
    st = SnapshotStore(store, timeout=0.05)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match="locked"):
            st.load("a")
        with pytest.raises(StoreError, match="cannot save 'c'.*locked"):
            st.save(hello[0], "c")
    finally:
        other.execute("ROLLBACK")
        other.close()
    st.load("a")
    st.close()


@pytest.mark.parametrize("instret", [(1 << 63) - 1, 1 << 63, (1 << 64) - 1])
def test_instruction_counts_beyond_sqlite_integers_round_trip(store, hello, tmp_path,
                                                              instret):
    snap = with_cpu(hello[0], instret=instret)
    with SnapshotStore(store) as st:
        info = st.save(snap, "big")
        assert info.instret == instret
        assert st.load("big").instret == instret
        assert [i.instret for i in st.list() if i.tag == "big"] == [instret]
        st.export("big", str(tmp_path / "big.vm"))
        st.import_stream(str(tmp_path / "big.vm"), "again")
        assert st.load("again").instret == instret
    r = cli("snapshot", "list", store)
    assert r.returncode == 0 and str(instret).encode() in r.stdout, r.stderr
    with SnapshotStore(store) as st:
        with pytest.raises(StoreError, match="cannot save 'bad'.*instret"):
            st.save(with_cpu(hello[0], instret=1 << 64), "bad")


def test_paths_and_names_that_are_not_utf8_round_trip(store, hello):
    path = "/nowhere/hel\udcffl\udcc3o"                  # the bytes b"hel\xffl\xc3o"
    snap = with_program(hello[0], path=path, accel="interp\udcfe", dbtlab_version="0.1\udc80")
    regions = [(f, n, p, name + "\udcff\n") for f, n, p, name in hello[0].memory.regions]
    renamed = V.VMSnapshot(hello[0].program, hello[0].cpu, hello[0].process,
                           V.MemoryImage(regions, hello[0].memory.pages))
    with SnapshotStore(store) as st:
        info = st.save(snap, "bytes")
        assert (info.program_path, info.accel) == (path, "interp\udcfe")
        back = st.load("bytes")
        assert same(back, with_program(st.load("a"), path=path, accel="interp\udcfe",
                                       dbtlab_version="0.1\udc80"))
    r = cli("snapshot", "list", store)
    assert r.returncode == 0, r.stderr
    assert b"/nowhere/hel\\xffl\\xc3o" in r.stdout
    with SnapshotStore(store) as st:
        st.save(renamed, "renamed")
        assert st.load("renamed").memory.regions == regions
    r = cli("snapshot", "diff", store, "a", "renamed")
    assert r.returncode == 1 and not r.stderr, r.stderr
    assert b"[stack]\\xff\\x0a" in r.stdout
    with SnapshotStore(store) as st:
        with pytest.raises(StoreError, match="cannot save 'lone'"):
            st.save(with_program(hello[0], path="/x/\ud800"), "lone")
        assert "lone" not in st.tags()


BAD_TAGS = ["t\udcff", "\ud800", "a\udfffb", "x\udc80y"]


@pytest.mark.parametrize("tag", BAD_TAGS)
def test_tags_that_are_not_utf8_are_refused(store, hello, tmp_path, tag):
    with SnapshotStore(store) as st:
        calls = [lambda: st.save(hello[0], tag), lambda: st.load(tag),
                 lambda: st.delete(tag), lambda: st.info(tag), lambda: tag in st,
                 lambda: st.export(tag, str(tmp_path / "o.vm"))]
        for call in calls:
            with pytest.raises(StoreError, match="not valid UTF-8") as e:
                call()
            one_line(e.value)
        st.export("a", str(tmp_path / "a.vm"))
        with pytest.raises(StoreError, match="not valid UTF-8"):
            st.import_stream(str(tmp_path / "a.vm"), tag)
        assert st.tags() == ["a", "b"]
    # the Python API (what --savevm-at and the QMP commands go through)
    with pytest.raises(DbtError, match="not valid UTF-8"):
        S.parse_save_point("100:" + tag)
    with pytest.raises(StoreError, match="not valid UTF-8"):
        S.loadvm(store, tag)
    with pytest.raises(StoreError, match="not valid UTF-8"):
        S.delete(store, tag)
    m = guest("hello").machine("interp")
    try:
        m.run(stop_at=100)
        with pytest.raises(StoreError, match="not valid UTF-8"):
            S.savevm(m, store, tag)
    finally:
        m.close()


def test_tags_with_control_characters_are_refused(store, hello):
    with SnapshotStore(store) as st:
        for tag in ("a\tb", "x\ry", "\x1b[31mred", "del\x7f", "two\nlines"):
            with pytest.raises(StoreError, match="control characters") as e:
                st.save(hello[0], tag)
            one_line(e.value)
        assert st.tags() == ["a", "b"]


def test_cli_refuses_tags_that_are_not_utf8(store, tmp_path):
    raw = b"t\xff"
    for args in ([b"snapshot", b"delete", store.encode(), raw],
                 [b"snapshot", b"export", store.encode(), raw, b"-o",
                  str(tmp_path / "o.vm").encode()],
                 [b"snapshot", b"import", store.encode(), str(tmp_path / "o.vm").encode(),
                  b"--tag", raw],
                 [b"run", b"--snapshot-store", store.encode(), b"--loadvm", raw],
                 [b"run", b"--accel", b"interp", b"--snapshot-store", store.encode(),
                  b"--savevm-at", b"1000:" + raw, HELLO.encode()]):
        if b"import" in args:
            assert cli("snapshot", "export", store, "a", "-o",
                       str(tmp_path / "o.vm")).returncode == 0
        r = cli(*args)
        err = assert_one_line_error(r, "not valid UTF-8")
        assert "t\\xff" in err
    # an imported file whose name is not UTF-8: its tag has the bytes escaped
    odd = os.path.join(os.fsencode(str(tmp_path)), b"od\xffd.vm")
    os.rename(str(tmp_path / "o.vm"), odd)
    r = cli(b"snapshot", b"import", store.encode(), odd)
    assert r.returncode == 0, r.stderr
    with SnapshotStore(store) as st:
        assert "od\\xffd" in st.tags()


# ---- what a snapshot names is checked before it is opened -----------------------------------
@pytest.fixture
def specials(tmp_path):
    """A directory, a FIFO, a socket, a character device, the host's /proc/self/mem."""
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    sock_path = str(tmp_path / "sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(sock_path)
    yield {"a directory": str(tmp_path), "a FIFO": fifo, "a socket": sock_path,
           "a character device": "/dev/zero", "/proc": "/proc/self/mem"}
    sock.close()


def test_a_program_that_is_not_a_regular_file_is_refused(hello, specials):
    for what, path in specials.items():
        if what == "a FIFO":
            continue                         # in the CLI test below (an open would wait)
        with pytest.raises(V.ProgramMismatch, match="refusing to open it") as e:
            V.instantiate(with_program(hello[0], path=path))
        assert what in one_line(e.value)
        with pytest.raises(V.ProgramMismatch, match="refusing to open it"):
            V.instantiate(hello[0], program=path)


@pytest.mark.parametrize("kind", ["a FIFO", "a character device"])
def test_cli_never_opens_a_fifo_or_device_named_as_the_program(store, hello, specials,
                                                               kind):
    """Before: the open of the FIFO waited for a writer, and /dev/zero was read forever
    (the subprocess timeout is only a guard against that old behaviour)."""
    with SnapshotStore(store) as st:
        st.save(with_program(hello[0], path=specials[kind]), "odd")
    r = cli("run", "--snapshot-store", store, "--loadvm", "odd", "--accel", "interp",
            timeout=120)
    assert_one_line_error(r, f"is {kind}, not a program file: refusing to open it")


def test_a_descriptor_naming_a_fifo_or_proc_is_not_reopened(hello, specials):
    keep = os.open(specials["a FIFO"], os.O_RDWR | os.O_NONBLOCK)   # an open would not wait
    try:
        for what in ("a FIFO", "a socket", "/proc"):
            rec = dict(fd=9, kind=V.FD_FILE, path="/data", host_path=specials[what],
                       flags=2, status=2, offset=0, cloexec=False, is_dir=False,
                       owned=True, stdio=0, data=b"")
            snap = V.VMSnapshot(hello[0].program, hello[0].cpu,
                                {**hello[0].process,
                                 "fds": hello[0].process["fds"] + [rec]}, hello[0].memory)
            snap = V.loads(V.dumps(snap))
            with pytest.raises(V.SnapshotError, match="cannot reopen guest fd 9") as e:
                V.instantiate(snap, stdout=os.open(os.devnull, os.O_WRONLY))
            assert what in one_line(e.value)
    finally:
        os.close(keep)


def test_a_regular_file_descriptor_is_still_reopened(hello, tmp_path):
    data = tmp_path / "data"
    data.write_bytes(b"0123456789")
    rec = dict(fd=9, kind=V.FD_FILE, path=str(data), host_path=str(data), flags=0,
               status=0, offset=4, cloexec=False, is_dir=False, owned=True, stdio=0,
               data=b"")
    snap = V.VMSnapshot(hello[0].program, hello[0].cpu,
                        {**hello[0].process, "fds": hello[0].process["fds"] + [rec]},
                        hello[0].memory)
    m = V.instantiate(snap, stdout=os.open(os.devnull, os.O_WRONLY))
    try:
        h = m.proc.fds[9].host_fd
        assert os.read(h, 3) == b"456"
        import fcntl
        assert not fcntl.fcntl(h, fcntl.F_GETFL) & os.O_NONBLOCK
    finally:
        m.close()


# ---- declared sizes never drive allocation or loops beyond the data -------------------------
def test_a_map_claiming_the_whole_address_space_is_never_iterated(hello, tmp_path):
    """A 2**26-page region (the whole 2**38-byte address space) with a few pages stored:
    reading, importing, exporting and sizing the stream touch only the stored pages. Run
    with a 1 GiB address-space limit: iterating 2**26 page numbers (before) needs more."""
    huge = V.MemoryImage([(0, 1 << 26, 7, "everything")], dict(hello[0].memory.pages))
    src = tmp_path / "huge.vm"
    V.write_file(V.VMSnapshot(hello[0].program, hello[0].cpu, hello[0].process, huge),
                 str(src))
    script = textwrap.dedent("""
        import resource, sys
        from dbtlab.runtime.vm import vmstate as V
        from dbtlab.runtime.vm.snapshots import SnapshotStore
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        snap = V.read_file(sys.argv[1])
        assert snap.memory.regions == [(0, 1 << 26, 7, "everything")]
        with SnapshotStore(sys.argv[2]) as st:
            info = st.import_stream(sys.argv[1], "huge")
            st.export("huge", sys.argv[3])
            assert st.load("huge").memory.npages == 1 << 26
        print("ok", info.size)
    """)
    r = subprocess.run([sys.executable, "-c", script, str(src), str(tmp_path / "h.db"),
                        str(tmp_path / "out.vm")], capture_output=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert r.stdout.split() == [b"ok", str(os.path.getsize(src)).encode()]
    assert (tmp_path / "out.vm").read_bytes() == src.read_bytes()
    # and it loads into a machine (memory is mapped by range) that runs to the same end
    res, out = resume(V.read_file(str(src)), "interp")
    ref_res, ref_out = resume(hello[0], "interp")
    assert (res.status, out) == (ref_res.status, ref_out) and b"translator" in out


def test_a_huge_mostly_untouched_mapping_is_saved_and_loaded_by_range(tmp_path):
    """A 64 GiB mapping with two written pages: capture reads only the written pages
    (page_bytes is counted, and refuses to be walked over the whole mapping), and the
    snapshot loads back through the store into a new machine."""
    from dbtlab.runtime.linux.memory import PROT_READ, PROT_WRITE
    m = guest("hello").machine("interp")
    big, size = 1 << 36, 1 << 36
    try:
        m.run(stop_at=5000)
        m.mem.map(big, size, PROT_READ | PROT_WRITE, "big")
        m.mem.poke(big + 12345 * 4096 + 7, b"x")
        m.mem.poke(big + size - 1, b"y")
        calls = []
        real = m.mem.page_bytes

        def counted(pn):
            calls.append(pn)
            assert len(calls) < 10_000, "capture walks every mapped page"
            return real(pn)
        m.mem.page_bytes = counted
        snap = V.capture(m)
        del m.mem.page_bytes
    finally:
        m.close()
    first = big >> 12
    assert (first, size >> 12, PROT_READ | PROT_WRITE, "big") in snap.memory.regions
    assert snap.memory.pages[first + 12345][7:8] == b"x"
    assert snap.memory.pages[first + (size >> 12) - 1][-1:] == b"y"
    db = str(tmp_path / "s.db")
    with SnapshotStore(db) as st:
        st.save(snap, "big")
        back = st.load("big")
    assert same(back, V.loads(V.dumps(snap)))
    m2 = V.instantiate(back, stdout=os.open(os.devnull, os.O_WRONLY))
    try:
        assert m2.mem.peek(big + 12345 * 4096 + 7, 1) == b"x"
        assert m2.mem.peek(big + size - 1, 1) == b"y"
        assert m2.mem.peek(big + 999 * 4096, 4096) == bytes(4096)
    finally:
        m2.close()


def test_regions_beyond_the_address_space_are_refused(hello):
    fmt, secs = sections(V.dumps(hello[0]))
    for first, n in ((0, (1 << 26) + 1), (1 << 26, 1), ((1 << 26) - 1, 2), (0, 1 << 28)):
        edited = []
        for s in secs:
            p = s.payload
            if s.name == "ram" and s.kind in (V.SEC_START, V.SEC_END):
                m = bytes((V.R_MAP,)) + struct.pack(">I", 1) + struct.pack(
                    ">IIBH", first, n, 3, 1) + b"x"
                start = 5 if s.kind == V.SEC_START else 1
                count, = struct.unpack_from(">I", p, start)
                pos = start + 4
                for _ in range(count):
                    pos += 11 + struct.unpack_from(">H", p, pos + 9)[0]
                p = (p[:4] if s.kind == V.SEC_START else b"") + m + p[pos:]
            edited.append(Sec(s.kind, s.sid, s.name, s.instance, s.version, p))
        with pytest.raises(V.StreamError, match="bad memory map entry"):
            V.loads(frame(edited, fmt))


def test_a_section_length_beyond_the_data_allocates_nothing(hello, tmp_path):
    """A section claiming 64 MiB in a short file: refused before the read (before, the
    reader asked the file for the whole declared length at once)."""
    data = V.dumps(hello[0])
    _fmt, secs = sections(data)
    plen_at = 12 + 1 + 4 + 1 + len("program") + 8
    assert struct.unpack_from(">I", data, plen_at)[0] == len(secs[0].payload)
    lie = data[:plen_at] + struct.pack(">I", V.MAX_PAYLOAD) + data[plen_at + 4:]
    path = tmp_path / "lie.vm"
    path.write_bytes(lie)
    tracemalloc.start()
    try:
        with pytest.raises(V.StreamError, match="section 'program' claims a 67108864-byte "
                                                "payload, but only .* bytes follow"):
            V.read_file(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak
    with pytest.raises(V.StreamError, match="truncated"):
        V.loads(lie)


# ---- fuzz target (a): mutated streams -------------------------------------------------------
def _mutate_stream(rng: random.Random, data: bytes, other: bytes) -> tuple[bytes, bool, int]:
    """(mutated stream, re-framed?, first changed byte). Raw mutations keep the CRCs as
    they were; re-framed ones edit a payload and frame it again with correct CRCs, so
    the decoders face the damage."""
    n = len(data)
    op = rng.randrange(10)
    if op == 0:                                        # bit flips
        b = bytearray(data)
        pos = [rng.randrange(n) for _ in range(rng.randint(1, 3))]
        for i in pos:
            b[i] ^= 1 << rng.randrange(8)
        return bytes(b), False, min(pos)
    if op == 1:                                        # truncation
        cut = rng.randrange(n)
        return data[:cut], False, cut
    if op == 2:                                        # splice from the other stream
        i, j = sorted(rng.randrange(len(other)) for _ in range(2))
        at = rng.randrange(n)
        return data[:at] + other[i:j] + data[at + rng.randrange(0, 64):], False, at
    if op == 3:                                        # duplicated / dropped span
        i = rng.randrange(n)
        k = rng.randint(1, 600)
        return (data[:i] + data[i:i + k] + data[i:]) if rng.random() < 0.5 else \
            (data[:i] + data[i + k:]), False, i
    if op == 4:                                        # huge 32-bit field anywhere
        i = rng.randrange(n - 4)
        v = rng.choice([0xFFFFFFFF, 0x7FFFFFFF, V.MAX_PAYLOAD, V.MAX_PAYLOAD + 1,
                        1 << 26, n, n - i])
        return data[:i] + struct.pack(">I", v) + data[i + 4:], False, i
    # re-framed: lies inside payloads
    fmt, secs = sections(data)
    secs = [Sec(s.kind, s.sid, s.name, s.instance, s.version, s.payload) for s in secs]
    s = rng.choice(secs)
    p = bytearray(s.payload)
    if op in (5, 6) and len(p) >= 4:                   # a length/count field lies
        i = rng.randrange(len(p) - 3)
        left = len(p) - i
        v = rng.choice([0xFFFFFFFF, 1 << 26, (1 << 26) + 1, left, left - 3, left + 1,
                        left * 2, 0x10000, rng.randrange(1 << 32)])
        p[i:i + 4] = struct.pack(">I", v & 0xFFFFFFFF)
    elif op == 7 and p:                                # bytes changed
        for _ in range(rng.randint(1, 4)):
            p[rng.randrange(len(p))] = rng.randrange(256)
    elif op == 8:                                      # a section from the other stream
        _f, osecs = sections(other)
        o = rng.choice([x for x in osecs if x.name == s.name] or osecs)
        p = bytearray(o.payload)
    else:                                              # cut or grown
        if p and rng.random() < 0.5:
            del p[rng.randrange(len(p)):]
        else:
            p[rng.randrange(len(p) + 1):rng.randrange(len(p) + 1)] = rng.randbytes(
                rng.randint(1, 12))
    s.payload = bytes(p)
    return frame(secs, fmt), True, 0


def _stream_cases(cases: int, seed: int, hello, tmp_path) -> None:
    """Every 8th case is read from a file (V.read_file), the others from memory."""
    a, b = V.dumps(hello[0]), V.dumps(hello[1])
    ref = V.loads(a)
    rng = random.Random(seed)
    refused = 0
    path = tmp_path / "case.vm"
    for case in range(cases):
        mutated, reframed, first = _mutate_stream(rng, a, b)
        assert len(mutated) <= 2 * len(a) + (64 << 10)    # each case is bounded by its data
        try:
            if case % 8 == 0:
                path.write_bytes(mutated)
                snap = V.read_file(str(path))
            else:
                snap = V.loads(mutated)
        except V.VersionError as e:
            # the format version (read before any CRC can be checked) or, re-framed, a
            # section's declared version
            assert reframed or first < 12, str(e)
            one_line(e)
            refused += 1
            continue
        except V.StreamError as e:
            one_line(e)
            refused += 1
            continue
        if mutated == a:
            assert same(snap, ref)
        elif not reframed:
            raise AssertionError(f"a damaged stream loaded (first change at byte {first})")
        else:                                            # a valid, different stream
            assert same(V.loads(V.dumps(snap, versions=snap.versions)), snap)
    assert refused > cases // 2


def test_fuzz_stream_mutations_are_refused_or_equal(hello, tmp_path):
    _stream_cases(1500, 11, hello, tmp_path)


@pytest.mark.slow
def test_fuzz_stream_mutations_long(hello, tmp_path):
    for seed in range(8):
        _stream_cases(20000, 1000 + seed, hello, tmp_path)


# ---- fuzz target (b): mutated store files ---------------------------------------------------
_TABLES = {"snapshots": ("tag", "created", "instret", "program_path", "format_version",
                         "size", "pages", "memory_map", "pages_digest", "checksum"),
           "sections": ("snapshot_id", "name", "version", "payload", "checksum"),
           "pages": ("hash", "data"),
           "snapshot_pages": ("snapshot_id", "pn", "page_id"),
           "meta": ("value",)}


def _random_value(rng: random.Random, old):
    r = rng.randrange(7)
    if r == 0:
        return None
    if r == 1 and isinstance(old, (bytes, str)) and old:
        b = bytearray(old.encode("utf-8", "surrogateescape") if isinstance(old, str) else old)
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return bytes(b) if isinstance(old, bytes) else b.decode("utf-8", "replace")
    if r == 2:
        return rng.randbytes(rng.randrange(0, 64))
    if r == 3:
        return rng.choice([0, 1, -1, 2, (1 << 63) - 1, -(1 << 63), 1 << 26])
    if r == 4 and isinstance(old, int):
        return old + rng.choice([-1, 1])
    if r == 5:
        return rng.choice(["", "cpu", "a", "x" * 300, "1", "2", "\x00"])
    return rng.random() * 1e300


def _mutate_store(rng: random.Random, path: str) -> str:
    op = rng.randrange(8)
    if op >= 5:                                        # the file itself
        with open(path, "rb") as f:
            data = bytearray(f.read())
        if op == 5:
            for _ in range(rng.randint(1, 4)):
                i = rng.randrange(len(data))
                data[i] ^= 1 << rng.randrange(8)
            what = "bit flips"
        elif op == 6:
            i = rng.choice([0, 16, 18, 28, 40, 44, 56, 92, 96])   # header fields
            data[i:i + 4] = rng.randbytes(4)
            what = f"header byte {i}"
        else:
            page = rng.randrange(len(data) // 4096)
            data[page * 4096:(page + 1) * 4096] = (rng.randbytes(4096) if rng.random() < 0.5
                                                   else bytes(4096))
            if rng.random() < 0.2:
                del data[rng.randrange(len(data)):]
            what = f"file page {page}"
        with open(path, "wb") as f:
            f.write(bytes(data))
        return what
    con = sqlite3.connect(path)
    try:
        table = rng.choice(list(_TABLES))
        rows = con.execute(f"SELECT rowid FROM {table}").fetchall() \
            if table != "snapshot_pages" else \
            con.execute("SELECT snapshot_id, pn FROM snapshot_pages").fetchall()
        if not rows:
            return "nothing"
        row = rng.choice(rows)
        where = "rowid = ?" if table != "snapshot_pages" else "snapshot_id = ? AND pn = ?"
        key = row if table == "snapshot_pages" else (row[0],)
        if op == 0:
            con.execute(f"DELETE FROM {table} WHERE {where}", key)
            what = f"deleted a {table} row"
        else:
            col = rng.choice(_TABLES[table])
            old = con.execute(f"SELECT {col} FROM {table} WHERE {where}", key).fetchone()[0]
            try:
                con.execute(f"UPDATE {table} SET {col} = ? WHERE {where}",
                            (_random_value(rng, old), *key))
            except sqlite3.IntegrityError:
                return "nothing"
            what = f"{table}.{col}"
        con.commit()
        return what
    finally:
        con.close()


def _store_cases(cases: int, seed: int, base, tmp_path) -> None:
    src, ref = base
    rng = random.Random(seed)
    path = str(tmp_path / "fuzz.db")
    outcomes = {"identical": 0, "refused": 0}
    for _ in range(cases):
        for suffix in ("", "-journal", "-wal"):
            if os.path.exists(path + suffix):
                os.unlink(path + suffix)
        shutil.copy(src, path)
        what = _mutate_store(rng, path)
        try:
            with SnapshotStore(path, create=False, timeout=0.1) as st:
                st.list()
                for tag, snap in ref.items():
                    got = st.load(tag)
                    assert same(got, snap), f"{what}: snapshot '{tag}' loaded differently"
            outcomes["identical"] += 1
        except (StoreError, V.VersionError) as e:
            one_line(e)
            outcomes["refused"] += 1
    assert outcomes["refused"] > cases // 3, outcomes


def test_fuzz_store_mutations_are_refused_or_identical(base_store, tmp_path):
    _store_cases(250, 5, base_store, tmp_path)


@pytest.mark.slow
def test_fuzz_store_mutations_long(base_store, tmp_path):
    for seed in range(6):
        _store_cases(3000, 500 + seed, base_store, tmp_path)
