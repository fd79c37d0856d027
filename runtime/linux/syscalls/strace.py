"""``--strace`` lines in the shape ``qemu-riscv64 -strace`` prints them:

    1000 openat(AT_FDCWD,"/etc/hostname",O_RDONLY|O_LARGEFILE) = 3
    1000 mmap(NULL,8192,PROT_READ|PROT_WRITE,MAP_PRIVATE|MAP_ANONYMOUS,-1,0) = 0x0000004000802000
    1000 openat(AT_FDCWD,"/nonexistent",O_RDONLY) = -1 errno=2 (No such file or directory)
    1000 exit_group(3)

pid, name, arguments without spaces (strings quoted, pointers hex, NULL, flags symbolic),
`` = result``. The call part is written before the syscall runs and the result after, so
output the syscall itself produces on the same stream lands between them, as with qemu.
Syscalls dbtlab does not implement show their six raw arguments in decimal (like qemu
does for syscalls it has no format for)."""

from __future__ import annotations

import os
import struct

from dbtlab.runtime.linux.memory import GuestFault
from dbtlab.runtime.linux.process import Process, signal_name
from dbtlab.runtime.linux.syscalls.common import AT_FDCWD, Syscall
from dbtlab.runtime.linux.syscalls.fs import FCNTL_NAMES, OFLAG_NAMES
from dbtlab.runtime.linux.syscalls.mm import MAP_NAMES, MAP_TYPE_NAMES, PROT_NAMES
from dbtlab.runtime.linux.syscalls.proc import FUTEX_NAMES
from dbtlab.runtime.linux.syscalls.signal import HOW_NAMES
from dbtlab.runtime.linux.syscalls.time import CLOCK_NAMES

STRING_LIMIT = 64
IOCTL_NAMES = {0x5401: "TCGETS", 0x5402: "TCSETS", 0x5413: "TIOCGWINSZ",
               0x5414: "TIOCSWINSZ", 0x541B: "FIONREAD", 0x5421: "FIONBIO"}
WHENCE_NAMES = {0: "SEEK_SET", 1: "SEEK_CUR", 2: "SEEK_END", 3: "SEEK_DATA", 4: "SEEK_HOLE"}
AT_NAMES = [(0x100, "AT_SYMLINK_NOFOLLOW"), (0x200, "AT_REMOVEDIR"),
            (0x400, "AT_SYMLINK_FOLLOW"), (0x800, "AT_NO_AUTOMOUNT"), (0x1000, "AT_EMPTY_PATH")]


def quote(b: bytes, limit: int = STRING_LIMIT) -> str:
    out = []
    for c in b[:limit]:
        ch = chr(c)
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif 32 <= c < 127:
            out.append(ch)
        else:
            out.append(f"\\{c:o}")
    return '"' + "".join(out) + '"' + ("..." if len(b) > limit else "")


def _flags(v: int, names: list[tuple[int, str]], zero: str = "0") -> str:
    parts = []
    for bit, name in names:
        if v & bit == bit and bit:
            parts.append(name)
            v &= ~bit
    if v:
        parts.append(f"{v:#x}")
    return "|".join(parts) if parts else zero


def _oflags(v: int) -> str:
    acc = {0: "O_RDONLY", 1: "O_WRONLY", 2: "O_RDWR"}.get(v & 3, "O_ACCMODE")
    rest = _flags(v & ~3, OFLAG_NAMES, "")
    return acc + ("|" + rest if rest else "")


def _mapflags(v: int) -> str:
    kind = MAP_TYPE_NAMES.get(v & 0xF, f"{v & 0xF:#x}")
    rest = _flags(v & ~0xF, MAP_NAMES, "")
    return kind + ("|" + rest if rest else "")


def format_arg(proc: Process, kind: str, v: int) -> str:
    if kind in ("ptr", "optr"):
        return "NULL" if v == 0 else f"{v:#x}"
    if kind == "addr":                                   # mapping addresses, as qemu
        return "NULL" if v == 0 else f"{v:#018x}"
    if kind == "timespec":
        if v == 0:
            return "NULL"
        try:
            sec, nsec = struct.unpack("<qq", proc.mem.read(v, 16))
        except GuestFault:
            return f"{v:#x}"
        return f"{{tv_sec = {sec},tv_nsec = {nsec}}}"
    if kind == "str":
        if v == 0:
            return "NULL"
        try:
            return quote(proc.mem.read_cstring(v, STRING_LIMIT + 1))
        except GuestFault:
            return f"{v:#x}"
    if kind in ("hex", "hex32"):
        return f"{v:#x}"
    if kind == "dirfd":
        return "AT_FDCWD" if v == AT_FDCWD else str(v)
    if kind == "oflags":
        return _oflags(v)
    if kind == "mode":
        return f"0{v:o}" if v else "0"
    if kind == "prot":
        return _flags(v, PROT_NAMES, "PROT_NONE")
    if kind == "mapflags":
        return _mapflags(v)
    if kind == "sig":
        return signal_name(v) if v else "0"
    if kind == "clock":
        return CLOCK_NAMES.get(v, str(v))
    if kind == "whence":
        return WHENCE_NAMES.get(v, str(v))
    if kind == "ioctl":
        return IOCTL_NAMES.get(v, f"{v:#x}")
    if kind == "atflags":
        return _flags(v, AT_NAMES, "0")
    if kind == "futexop":
        base = FUTEX_NAMES.get(v & 127, str(v & 127))
        return base + ("|FUTEX_PRIVATE_FLAG" if v & 128 else "") + \
            ("|FUTEX_CLOCK_REALTIME" if v & 256 else "")
    if kind == "fcntl":
        return FCNTL_NAMES.get(v, str(v))
    if kind == "how":
        return HOW_NAMES.get(v, str(v))
    return str(v)


def format_call(proc: Process, sc: Syscall | None, name: str, args: list[int]) -> str:
    """``pid name(args)`` — no result yet."""
    if sc is None:
        text = ",".join(str(a - (1 << 64) if a >> 63 else a) for a in args)
    else:
        kinds = list(sc.args)
        vals = list(args)
        if sc.name == "openat" and not vals[2] & 0o20000100:   # no O_CREAT / O_TMPFILE
            kinds, vals = kinds[:3], vals[:3]
        text = ",".join(format_arg(proc, k, v) for k, v in zip(kinds, vals))
    return f"{proc.pid} {name}({text})"


def format_result(proc: Process, sc: Syscall | None, args: list[int], ret: int) -> str:
    """`` = result`` (nothing for syscalls that do not return)."""
    if sc is not None and sc.ret == "none":
        return ""
    if -4096 < ret < 0:
        return f" = -1 errno={-ret} ({os.strerror(-ret)})"
    if sc is not None and sc.ret == "ptr":
        out = f" = {ret & 0xFFFFFFFFFFFFFFFF:#018x}"
    else:
        out = f" = {ret}"
    if sc is not None and sc.post is not None:
        out += sc.post(proc, tuple(args), ret)
    return out


def format_kill(proc: Process) -> str:
    """The lines strace prints when the process dies of a signal."""
    sig = proc.killed_by
    name = signal_name(sig)
    return (f"--- {name} {{si_signo={name}, si_code=SI_TKILL, si_pid={proc.pid}, "
            f"si_uid={proc.uid}}} ---\n+++ killed by {name} +++\n")
