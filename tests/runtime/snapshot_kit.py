"""Helpers shared by the snapshot tests: guest machines with captured stdout, and a walker
that splits a stream into its sections and frames them again with correct checksums (so a
test can damage a payload and still get past the CRCs to the decoders)."""

from __future__ import annotations

import os
import struct
import tempfile
import zlib
from dataclasses import dataclass

from dbtlab.runtime.vm import vmstate as V
from dbtlab.runtime.config import RunConfig
from dbtlab.runtime.machine import Machine
from tests.conftest import GUESTS, load_manifest


def program(name: str) -> dict:
    return next(p for p in load_manifest()["programs"] if p["name"] == name)


class Guest:
    """A shipped guest program ready to start (args with {tmpfile} substituted)."""

    def __init__(self, prog: dict, libc: str, tmpdir) -> None:
        self.prog = prog
        self.libc = libc
        self.path = str(GUESTS / prog["binaries"][libc])
        self.tmpfile = os.path.join(str(tmpdir), "guest.tmp")
        self.args = [a.replace("{tmpfile}", self.tmpfile) for a in prog["test"]["args"]]
        self.env = [f"{k}={v}" for k, v in (prog.get("env") or {}).items()]
        self.expected = (GUESTS / prog["expected_stdout"]).read_bytes()
        self.total = prog["measured"]["test_insns"][libc]

    def machine(self, accel: str, out: "Out | None" = None, **cfg) -> Machine:
        return Machine(self.path, [self.path, *self.args], env=self.env,
                       config=RunConfig(accel=accel, **cfg),
                       stdout=(out.fd if out else os.open(os.devnull, os.O_WRONLY)))

    def file_state(self) -> bytes | None:
        """The guest's temporary file (fileio), to put back before each resume: the host
        file system is not part of a snapshot."""
        if os.path.exists(self.tmpfile):
            with open(self.tmpfile, "rb") as f:
                return f.read()
        return None

    def set_file_state(self, data: bytes | None) -> None:
        if data is None:
            if os.path.exists(self.tmpfile):
                os.unlink(self.tmpfile)
        else:
            with open(self.tmpfile, "wb") as f:
                f.write(data)


def guest(name: str, libc: str = "musl", tmpdir=None) -> Guest:
    return Guest(program(name), libc, tmpdir or tempfile.gettempdir())


class Out:
    """A temporary file standing for the guest's stdout."""

    def __init__(self) -> None:
        self.f = tempfile.TemporaryFile()
        self.fd = self.f.fileno()

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def read(self) -> bytes:
        os.lseek(self.fd, 0, os.SEEK_SET)
        chunks = []
        while True:
            b = os.read(self.fd, 1 << 20)
            if not b:
                return b"".join(chunks)
            chunks.append(b)

    def close(self) -> None:
        self.f.close()


def resume(snap: V.VMSnapshot, accel: str, **kw):
    """Instantiate and run a snapshot to the end: (RunResult, stdout after the snapshot)."""
    out = Out()
    m = V.instantiate(snap, config=RunConfig(accel=accel), stdout=out.fd, **kw)
    try:
        res = m.run()
    finally:
        m.close()
    data = out.read()
    out.close()
    return res, data


# ---- stream surgery --------------------------------------------------------------------
@dataclass
class Sec:
    kind: int
    sid: int
    name: str
    instance: int
    version: int
    payload: bytes


def sections(data: bytes) -> tuple[int, list[Sec]]:
    """(format version, sections) of a well-formed stream."""
    assert data[:8] == V.MAGIC
    fmt, = struct.unpack_from(">I", data, 8)
    pos = 12
    out: list[Sec] = []
    names: dict[int, tuple[str, int, int]] = {}
    while True:
        kind = data[pos]
        pos += 1
        if kind == V.SEC_EOF:
            return fmt, out
        sid, = struct.unpack_from(">I", data, pos)
        pos += 4
        if kind in (V.SEC_START, V.SEC_FULL):
            n = data[pos]
            name = data[pos + 1:pos + 1 + n].decode()
            pos += 1 + n
            inst, ver = struct.unpack_from(">II", data, pos)
            pos += 8
            names[sid] = (name, inst, ver)
        name, inst, ver = names[sid]
        plen, = struct.unpack_from(">I", data, pos)
        pos += 4
        out.append(Sec(kind, sid, name, inst, ver, data[pos:pos + plen]))
        pos += plen + 9


def frame(secs: list[Sec], fmt: int = V.FORMAT_VERSION) -> bytes:
    """A stream with correct CRCs from (possibly edited) sections."""
    out = bytearray(V.MAGIC + struct.pack(">I", fmt))
    for s in secs:
        head = struct.pack(">BI", s.kind, s.sid)
        if s.kind in (V.SEC_START, V.SEC_FULL):
            b = s.name.encode()
            head += bytes((len(b),)) + b + struct.pack(">II", s.instance, s.version)
        head += struct.pack(">I", len(s.payload))
        crc = zlib.crc32(s.payload, zlib.crc32(head))
        out += head + s.payload + struct.pack(">BII", V.SEC_FOOTER, s.sid, crc)
    out.append(V.SEC_EOF)
    out += struct.pack(">I", zlib.crc32(bytes(out)))
    return bytes(out)
