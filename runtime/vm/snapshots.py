"""The snapshot store: named machine snapshots in one SQLite file (stdlib ``sqlite3``).

Like QEMU's internal snapshots in a qcow2 image, but for a user-mode process:

* every snapshot has a tag and metadata (creation time, guest instruction count, program
  path and SHA-256, dbtlab version, the accelerator that saved it, its size as a plain
  stream, how many pages it added);
* memory is stored content-addressed: a page's key is the SHA-256 of its bytes, its
  value the zlib-compressed page, so successive snapshots of a process share every page
  that did not change (only new contents are compressed and written);
* the rest of the state is kept as the stream's section payloads, with their versions, so
  an old store is read with the same versioned descriptions as an old stream;
* a save is one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``): a writer killed mid-save
  leaves the store as it was before that save — SQLite's journal rolls the partial
  transaction back when the file is next opened;
* ``delete`` removes a snapshot and garbage-collects the pages no snapshot references;
* ``export``/``import_stream`` convert to and from the plain stream format
  (``dbtlab.runtime.vm.vmstate``), which is what travels between machines.

Schema (version 1)::

    meta(key, value)                         -- format = dbtlab-snapshot-store, schema = 1
    snapshots(id, tag UNIQUE, created, instret, program_path, program_sha256,
              dbtlab_version, accel, format_version, size, pages, new_pages, new_bytes,
              memory_map)
    sections(snapshot_id, name, version, payload)     -- the FULL sections of the stream
    pages(id, hash UNIQUE, data)                      -- sha256(page) -> zlib(page)
    snapshot_pages(snapshot_id, pn, page_id)          -- the non-zero pages of a snapshot
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from dbtlab.runtime.vm import vmstate as V

log = logging.getLogger(__name__)

STORE_FORMAT = "dbtlab-snapshot-store"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE snapshots(
    id INTEGER PRIMARY KEY,
    tag TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    instret INTEGER NOT NULL,
    program_path TEXT NOT NULL,
    program_sha256 TEXT NOT NULL,
    dbtlab_version TEXT NOT NULL,
    accel TEXT NOT NULL,
    format_version INTEGER NOT NULL,
    size INTEGER NOT NULL,
    pages INTEGER NOT NULL,
    new_pages INTEGER NOT NULL,
    new_bytes INTEGER NOT NULL,
    memory_map BLOB NOT NULL
);
CREATE TABLE sections(
    snapshot_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (snapshot_id, name)
);
CREATE TABLE pages(
    id INTEGER PRIMARY KEY,
    hash BLOB NOT NULL UNIQUE,
    data BLOB NOT NULL
);
CREATE TABLE snapshot_pages(
    snapshot_id INTEGER NOT NULL,
    pn INTEGER NOT NULL,
    page_id INTEGER NOT NULL,
    PRIMARY KEY (snapshot_id, pn)
) WITHOUT ROWID;
CREATE INDEX snapshot_pages_page ON snapshot_pages(page_id);
"""

_BATCH = 500            # host parameters per IN (...) query


class StoreError(V.SnapshotError):
    """The store file cannot be used, or has no such snapshot."""


@dataclass(frozen=True)
class SnapshotInfo:
    """One stored snapshot's metadata."""

    tag: str
    created: float
    instret: int
    program_path: str
    program_sha256: str
    dbtlab_version: str
    accel: str
    format_version: int
    size: int               # bytes as a plain stream (what export writes)
    pages: int              # non-zero pages
    new_pages: int          # pages this snapshot added to the store when it was saved
    new_bytes: int          # compressed bytes it added

    @property
    def created_text(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.created))

    def __str__(self) -> str:
        return (f"{self.tag}: {os.path.basename(self.program_path)} at {self.instret} "
                f"instructions ({self.accel}), {self.pages} pages, {self.size} bytes")


_INFO_COLS = ("tag, created, instret, program_path, program_sha256, dbtlab_version, accel, "
              "format_version, size, pages, new_pages, new_bytes")


class SnapshotStore:
    """A snapshot store file. Use as a context manager or call ``close``.

    ``create=False`` refuses a missing file (read-only commands must not create one)."""

    def __init__(self, path: str, *, create: bool = True, timeout: float = 30.0) -> None:
        self.path = path
        exists = os.path.exists(path)
        if not exists and not create:
            raise StoreError(f"no snapshot store at {path}")
        if exists and os.path.isdir(path):
            raise StoreError(f"{path} is a directory, not a snapshot store")
        try:
            self.db = sqlite3.connect(path, timeout=timeout, isolation_level=None)
        except sqlite3.Error as e:
            raise StoreError(f"cannot open snapshot store {path}: {e}") from None
        try:
            self._check_or_create()
        except BaseException:
            self.db.close()
            raise

    # ---- schema ----------------------------------------------------------------------------
    def _check_or_create(self) -> None:
        try:
            tables = {r[0] for r in self.db.execute(
                "SELECT name FROM sqlite_master WHERE type='table'")}
            if not tables:
                self.db.execute("BEGIN IMMEDIATE")
                tables = {r[0] for r in self.db.execute(
                    "SELECT name FROM sqlite_master WHERE type='table'")}
                if not tables:
                    for stmt in _SCHEMA.split(";"):
                        if stmt.strip():
                            self.db.execute(stmt)
                    self.db.executemany("INSERT INTO meta VALUES (?, ?)",
                                        [("format", STORE_FORMAT),
                                         ("schema", str(SCHEMA_VERSION))])
                self.db.execute("COMMIT")
                return
            if "meta" not in tables:
                raise StoreError(f"{self.path} is an SQLite database but not a dbtlab "
                                 "snapshot store")
            meta = dict(self.db.execute("SELECT key, value FROM meta"))
        except sqlite3.DatabaseError as e:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise StoreError(f"{self.path} is not a dbtlab snapshot store ({e})") from None
        if meta.get("format") != STORE_FORMAT:
            raise StoreError(f"{self.path} is an SQLite database but not a dbtlab snapshot "
                             "store")
        try:
            schema = int(meta.get("schema", "0"))
        except ValueError:
            schema = 0
        if schema > SCHEMA_VERSION:
            raise V.VersionError(f"snapshot store {self.path} has schema version {schema}, "
                                 f"newer than this dbtlab reads ({SCHEMA_VERSION}): it was "
                                 "written by a newer dbtlab; upgrade dbtlab to use it")
        if schema < 1:
            raise StoreError(f"snapshot store {self.path}: unknown schema version "
                             f"{meta.get('schema')!r}")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "SnapshotStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``: writers queue on the file lock):
        committed when the block ends, rolled back when it raises; a database error says
        ``what`` failed."""
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as e:
            raise StoreError(f"snapshot store {self.path}: {what}: {e}") from None

    def _q(self, sql: str, args=()) -> sqlite3.Cursor:
        try:
            return self.db.execute(sql, args)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"snapshot store {self.path}: {e}") from None

    # ---- listing ---------------------------------------------------------------------------
    def list(self) -> list[SnapshotInfo]:
        """Every snapshot, in the order they were stored."""
        return [SnapshotInfo(*r) for r in
                self._q(f"SELECT {_INFO_COLS} FROM snapshots ORDER BY id")]

    def tags(self) -> list[str]:
        return [i.tag for i in self.list()]

    def __contains__(self, tag: str) -> bool:
        return self._q("SELECT 1 FROM snapshots WHERE tag = ?", (tag,)).fetchone() is not None

    def info(self, tag: str) -> SnapshotInfo:
        r = self._q(f"SELECT {_INFO_COLS} FROM snapshots WHERE tag = ?", (tag,)).fetchone()
        if r is None:
            raise self._no_such(tag)
        return SnapshotInfo(*r)

    def _no_such(self, tag: str) -> StoreError:
        have = self.tags()
        hint = f" (it has: {', '.join(have[:10])}{', ...' if len(have) > 10 else ''})" \
            if have else " (it is empty)"
        return StoreError(f"no snapshot '{tag}' in {self.path}{hint}")

    def stats(self) -> dict:
        """Counts for the whole store: snapshots, distinct pages, their compressed bytes."""
        n = self._q("SELECT count(*) FROM snapshots").fetchone()[0]
        pages, nbytes = self._q("SELECT count(*), coalesce(sum(length(data)), 0) "
                                "FROM pages").fetchone()
        refs = self._q("SELECT count(*) FROM snapshot_pages").fetchone()[0]
        return {"snapshots": n, "pages": pages, "page_bytes": nbytes, "page_refs": refs,
                "file_bytes": os.path.getsize(self.path)}

    # ---- saving ----------------------------------------------------------------------------
    def savevm(self, machine, tag: str, **kw) -> SnapshotInfo:
        """Capture a stopped machine and save it as ``tag``."""
        return self.save(V.capture(machine), tag, **kw)

    def save(self, snap: V.VMSnapshot, tag: str, *, replace: bool = True,
             progress: Callable[[int, int], None] | None = None) -> SnapshotInfo:
        """Store ``snap`` as ``tag`` in one transaction (an existing tag is replaced unless
        ``replace`` is False). ``progress(done, total)`` is called as pages are stored."""
        if not tag or tag != tag.strip() or "\n" in tag:
            raise StoreError(f"bad snapshot tag {tag!r}")
        t0 = time.perf_counter()
        hashes = {pn: hashlib.sha256(raw).digest() for pn, raw in snap.memory.pages.items()}
        # state sections are stored re-encoded at the current versions
        sections = {name: (d.version, d.encode(getattr(snap, name)))
                    for name, d in V.FULL_SECTIONS.items()}
        memory_map = V.encode_regions(snap.memory.regions)
        with self._write(f"cannot save '{tag}'") as db:
            old = db.execute("SELECT id FROM snapshots WHERE tag = ?", (tag,)).fetchone()
            if old is not None:
                if not replace:
                    raise StoreError(f"snapshot '{tag}' already exists in {self.path}")
                self._delete_rows(old[0])
            # which contents are there already
            known: dict[bytes, tuple[int, int]] = {}
            distinct = list(set(hashes.values()))
            for i in range(0, len(distinct), _BATCH):
                chunk = distinct[i:i + _BATCH]
                q = ("SELECT hash, id, length(data) FROM pages WHERE hash IN ("
                     + ",".join("?" * len(chunk)) + ")")
                for h, pid, n in db.execute(q, chunk):
                    known[h] = (pid, n)
            new_pages = new_bytes = 0
            total = len(hashes)
            refs = []
            for done, (pn, h) in enumerate(sorted(hashes.items()), 1):
                if h not in known:
                    data = snap.compressed.get(pn) or V.compress_page(snap.memory.pages[pn])
                    cur = db.execute("INSERT INTO pages(hash, data) VALUES (?, ?)",
                                     (h, data))
                    known[h] = (cur.lastrowid, len(data))
                    new_pages += 1
                    new_bytes += len(data)
                refs.append((pn, known[h][0]))
                if progress is not None:
                    progress(done, total)
            size = V.stream_size(snap, {pn: known[h][1] for pn, h in hashes.items()})
            p = snap.program
            cur = db.execute(
                "INSERT INTO snapshots(tag, created, instret, program_path, program_sha256,"
                " dbtlab_version, accel, format_version, size, pages, new_pages, new_bytes,"
                " memory_map) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (tag, p["created"], snap.instret, p["path"], p["sha256"].hex(),
                 p["dbtlab_version"], p["accel"], V.FORMAT_VERSION, size, len(hashes),
                 new_pages, new_bytes, memory_map))
            sid = cur.lastrowid
            db.executemany("INSERT INTO sections VALUES (?, ?, ?, ?)",
                           [(sid, n, v, pl) for n, (v, pl) in sections.items()])
            db.executemany("INSERT INTO snapshot_pages VALUES (?, ?, ?)",
                           [(sid, pn, pid) for pn, pid in refs])
            if old is not None:
                self._gc()
        info = self.info(tag)
        log.info("saved snapshot %s in %.3f s (%d new pages, %d bytes)", info,
                 time.perf_counter() - t0, new_pages, new_bytes)
        return info

    # ---- loading ---------------------------------------------------------------------------
    def load(self, tag: str) -> V.VMSnapshot:
        """The stored snapshot ``tag``, checked (page hashes, section payloads)."""
        row = self._q("SELECT id, memory_map, format_version FROM snapshots WHERE tag = ?",
                      (tag,)).fetchone()
        if row is None:
            raise self._no_such(tag)
        sid, memory_map, fmt = row
        if fmt > V.FORMAT_VERSION:
            raise V.VersionError(f"snapshot '{tag}' has stream format version {fmt}, newer "
                                 f"than this dbtlab reads ({V.FORMAT_VERSION})")
        damaged = f"snapshot '{tag}' in {self.path} is damaged"
        try:
            regions = V.decode_regions(memory_map)
        except V.StreamError as e:
            raise StoreError(f"{damaged}: {e}") from None
        states, versions = {}, {}
        for name, version, payload in self._q(
                "SELECT name, version, payload FROM sections WHERE snapshot_id = ?", (sid,)):
            d = V.FULL_SECTIONS.get(name)
            if d is None:
                raise StoreError(f"{damaged}: unknown section '{name}'")
            try:
                states[name] = d.decode(payload, version)
            except V._Malformed as e:
                raise StoreError(f"{damaged}: section '{name}': {e}") from None
            versions[name] = version
        missing = [n for n in V.FULL_SECTIONS if n not in states]
        if missing:
            raise StoreError(f"{damaged}: missing section(s) {', '.join(missing)}")
        mapped = V.RegionIndex(regions)
        pages, compressed = {}, {}
        for pn, h, data in self._q(
                "SELECT sp.pn, p.hash, p.data FROM snapshot_pages sp JOIN pages p "
                "ON p.id = sp.page_id WHERE sp.snapshot_id = ?", (sid,)):
            try:
                raw = V.decompress_page(data)
            except V._Malformed as e:
                raise StoreError(f"{damaged}: page {pn:#x}: {e}") from None
            if hashlib.sha256(raw).digest() != h or pn not in mapped:
                raise StoreError(f"{damaged}: page {pn:#x} does not match its hash or map")
            pages[pn] = raw
            compressed[pn] = data
        versions[V.RAM_SECTION] = V.RAM_VERSION
        return V.VMSnapshot(states["program"], states["cpu"], states["process"],
                            V.MemoryImage(regions, pages), versions=versions,
                            format_version=fmt, compressed=compressed)

    # ---- deleting --------------------------------------------------------------------------
    def _delete_rows(self, sid: int) -> None:
        self.db.execute("DELETE FROM snapshot_pages WHERE snapshot_id = ?", (sid,))
        self.db.execute("DELETE FROM sections WHERE snapshot_id = ?", (sid,))
        self.db.execute("DELETE FROM snapshots WHERE id = ?", (sid,))

    def _gc(self) -> int:
        cur = self.db.execute("DELETE FROM pages WHERE id NOT IN "
                              "(SELECT page_id FROM snapshot_pages)")
        return cur.rowcount

    def delete(self, tag: str) -> int:
        """Delete a snapshot and every page no other snapshot uses; returns the number of
        pages freed."""
        with self._write(f"cannot delete '{tag}'") as db:
            row = db.execute("SELECT id FROM snapshots WHERE tag = ?", (tag,)).fetchone()
            if row is None:
                raise self._no_such(tag)
            self._delete_rows(row[0])
            freed = self._gc()
        log.info("deleted snapshot %s (%d pages freed)", tag, freed)
        return freed

    def gc(self) -> int:
        """Remove pages no snapshot references (saves and deletes already do this)."""
        with self._write("cannot collect unreferenced pages"):
            return self._gc()

    def vacuum(self) -> None:
        """Give the space of deleted pages back to the file system."""
        self._q("VACUUM")

    # ---- the plain stream ------------------------------------------------------------------
    def export(self, tag: str, dest) -> int:
        """Write snapshot ``tag`` as a plain stream to ``dest`` (a path or a writable
        VMFile); returns the bytes written."""
        snap = self.load(tag)
        if isinstance(dest, V.VMFile):
            n0 = dest.transferred
            V.write_stream(snap, dest)
            return dest.transferred - n0
        return V.write_file(snap, dest)

    def import_stream(self, src, tag: str | None = None, *,
                      replace: bool = True) -> SnapshotInfo:
        """Read a plain stream (a path or a readable VMFile) — checked completely before
        anything is stored — and save it as ``tag`` (default: the file's name without its
        extension)."""
        if isinstance(src, V.VMFile):
            snap = V.read_stream(src)
            if tag is None:
                raise StoreError("import: a tag is needed for a stream that is not a file")
        else:
            snap = V.read_file(src)
            if tag is None:
                tag = os.path.splitext(os.path.basename(src))[0] or "imported"
        return self.save(snap, tag, replace=replace)

    def __iter__(self) -> Iterator[SnapshotInfo]:
        return iter(self.list())
