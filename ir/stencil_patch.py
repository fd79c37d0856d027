"""Copy and patch: stencils into executable memory, holes filled, at run time.

``CodeBuffer`` is executable memory dbtlab manages itself: one memfd mapped twice, a
writable view (where the patcher writes) and an executable view (what runs), so no page
is ever writable and executable at once. The library's constant pools and one trampoline
per host function the stencils call sit at the start of the buffer, within reach of the
32-bit relative references the code uses.

``Patcher.emit`` takes a list of (stencil, fields) parts — a block is its prologue, its
instructions and maybe a final exit — and lays them out one after another: a stencil that
ends with ``jmp H_cont`` drops it (the next stencil follows), every other reference to
``H_cont`` becomes a jump to the next part, and every hole gets its value from the part's
fields. A value that does not fit its hole raises ``HoleOverflow``: the caller translates
that block another way.
"""

from __future__ import annotations

import ctypes
import os
import struct
from typing import Callable

from dbtlab.ir.stencil_lib import R_32, R_32S, R_64, R_PC32, R_PLT32, Library, Stencil

_pack = struct.pack_into
_MASK64 = (1 << 64) - 1


class BufferFull(Exception):
    """The code buffer has no room left: flush it (every translation in it dies)."""


class HoleOverflow(Exception):
    """A hole's value does not fit where the stencil keeps it."""


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_PROT_READ, _PROT_WRITE, _PROT_EXEC, _MAP_SHARED = 1, 2, 4, 1
_MAP_FAILED = ctypes.c_void_p(-1).value


class CodeBuffer:
    """Writable and executable views of one memfd."""

    def __init__(self, size: int = 64 << 20) -> None:
        self.size = size
        self._fd = os.memfd_create("dbtlab-stencil-code", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self._fd, size)
            self.rw_base = self._map(_PROT_READ | _PROT_WRITE)
            self.rx_base = self._map(_PROT_READ | _PROT_EXEC)
        except OSError:
            os.close(self._fd)
            raise
        self.used = 0
        self.reserved = 0                     # bytes kept by reset() (data, trampolines)

    def _map(self, prot: int) -> int:
        addr = _libc.mmap(None, self.size, prot, _MAP_SHARED, self._fd, 0)
        if addr in (None, _MAP_FAILED):
            e = ctypes.get_errno()
            raise OSError(e, f"mapping the stencil code buffer: {os.strerror(e)}")
        return addr

    def alloc(self, n: int, align: int = 16) -> int:
        """Offset of ``n`` fresh bytes."""
        off = (self.used + align - 1) & -align
        if off + n > self.size:
            raise BufferFull(f"stencil code buffer full ({self.size >> 20} MiB)")
        self.used = off + n
        return off

    def write(self, off: int, data: bytes | bytearray) -> None:
        if off < 0 or off + len(data) > self.size:
            raise ValueError("write outside the code buffer")
        ctypes.memmove(self.rw_base + off, bytes(data), len(data))

    def read(self, off: int, n: int) -> bytes:
        return ctypes.string_at(self.rx_base + off, n)

    def reset(self) -> None:
        """Forget every translation (the caller has unlinked them all)."""
        self.used = self.reserved

    def close(self) -> None:
        if self._fd >= 0:
            _libc.munmap(self.rw_base, self.size)
            _libc.munmap(self.rx_base, self.size)
            os.close(self._fd)
            self._fd = -1


class Patcher:
    """Lays out parts of stencils and fills their holes (the run-time hot path)."""

    def __init__(self, lib: Library,
                 holes: dict[str, tuple[str, Callable[[dict], int], frozenset]],
                 buf: CodeBuffer | None = None) -> None:
        self.lib = lib
        self.buf = buf or CodeBuffer()
        self.holes = holes                  # symbol -> (kind, evaluator, fields it reads)
        self._targets: dict[str, int] = {}  # "sec:..." / "fn:..." -> executable address
        for name, data in lib.data.items():
            off = self.buf.alloc(len(data), 64)
            self.buf.write(off, data)
            self._targets[f"sec:{name}"] = self.buf.rx_base + off
        fns = sorted({t for s in lib.stencils.values() for _, _, t, _ in s.patches
                      if t.startswith("fn:")})
        libc = ctypes.CDLL(None)
        libm = ctypes.CDLL("libm.so.6")
        for t in fns:
            name = t[3:]
            addr = None
            for lib_ in (libm, libc):
                try:
                    addr = ctypes.cast(getattr(lib_, name), ctypes.c_void_p).value
                    break
                except AttributeError:
                    continue
            if not addr:
                raise HoleOverflow(f"stencils call {name}, which this host does not have")
            off = self.buf.alloc(16, 16)     # jmp *0(%rip); .quad addr
            self.buf.write(off, b"\xff\x25\x00\x00\x00\x00" + struct.pack("<Q", addr))
            self._targets[t] = self.buf.rx_base + off
        self.buf.reserved = self.buf.used

    def prepare(self, st: Stencil, fields: dict, dynamic: frozenset) -> tuple:
        """``st`` with every hole that depends only on ``fields`` (an instruction's own)
        filled in, once per instruction word: (code, size when followed, tail jump, the
        holes left for ``emit``: [(offset, type, kind, evaluator, addend)], the references
        ``emit`` resolves by position: [(offset, type, target, addend)])."""
        code = bytearray(st.code)
        dyn, rel = [], []
        for off, typ, tgt, add in st.patches:
            if st.tail_jump and off == len(st.code) - 4 and tgt == "H_cont":
                continue                          # dropped when another stencil follows
            h = self.holes.get(tgt)
            if h is None:
                rel.append((off, typ, tgt, add))
            elif h[2] & dynamic:
                dyn.append((off, typ, h[0], h[1], add))
            else:
                _fill(code, off, typ, h[0], h[1](fields), add)
        return (bytes(code), len(code) - (5 if st.tail_jump else 0), st.tail_jump, dyn, rel)

    def emit(self, parts: list[tuple[tuple, dict]]) -> tuple[int, list[int]]:
        """Lay out prepared stencils one after another, fill the holes left (from each
        part's fields) and the references to the next part, constant pools and
        trampolines. Returns the executable address of the first part and each part's
        offset from it (host pc -> guest instruction maps)."""
        last = len(parts) - 1
        offs, pos = [], 0
        for i, (pre, _) in enumerate(parts):
            offs.append(pos)
            pos += pre[1] if (pre[2] and i < last) else len(pre[0])
        base_off = self.buf.alloc(pos)
        base = self.buf.rx_base + base_off
        out = bytearray(pos)
        targets = self._targets
        for i, ((code, size, tail, dyn, rel), fields) in enumerate(parts):
            start = offs[i]
            n = size if (tail and i < last) else len(code)
            out[start:start + n] = code if n == len(code) else code[:n]
            for off, typ, kind, ev, add in dyn:
                _fill(out, start + off, typ, kind, ev(fields), add)
            if rel:
                nxt = base + (offs[i + 1] if i < last else pos)
                for off, typ, what, add in rel:
                    at = start + off
                    target = nxt if what == "H_cont" else targets[what]
                    if typ in (R_PC32, R_PLT32):
                        _pack("<i", out, at, target + add - (base + at))
                    elif typ == R_64:
                        _pack("<Q", out, at, (target + add) & _MASK64)
                    else:
                        raise HoleOverflow(f"{what}: absolute 32-bit reference")
        self.buf.write(base_off, out)
        return base, offs


def _fill(out: bytearray, at: int, typ: int, kind: str, v: int, add: int) -> None:
    """Write hole value ``v`` (of ``kind``) where a relocation of type ``typ`` points."""
    v &= _MASK64
    if kind == "i32":
        if 0x7FFFFFFF < v < 0xFFFFFFFF80000000:
            raise HoleOverflow(f"{v:#x} is not a 32-bit signed value")
    elif kind == "u32":
        if v >> 32:
            raise HoleOverflow(f"{v:#x} is not a 32-bit value")
    elif kind == "off" and v >> 31:
        raise HoleOverflow(f"offset {v:#x} out of range")
    x = (v + add) & _MASK64
    if typ == R_64:
        _pack("<Q", out, at, x)
    elif typ == R_32 or typ == R_32S:
        _pack("<I", out, at, x & 0xFFFFFFFF)
    else:
        raise HoleOverflow(f"hole in a relative reference (type {typ})")
