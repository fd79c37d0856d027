"""System information: uname, sysinfo, getrandom. All fixed or seeded, so a guest's output
never depends on the host it runs on.

uname: sysname "Linux", nodename "dbtlab", release "6.1.0-dbtlab", version
"#1 SMP PREEMPT_DYNAMIC Thu Jan  1 00:00:00 UTC 2026", machine "riscv64", domainname
"(none)". sysinfo: 8 GiB of RAM of which 4 GiB free, no swap, one process, uptime from the
monotonic clock."""

from __future__ import annotations

import struct

from dbtlab.runtime.linux.process import Process, SyscallError
from dbtlab.runtime.linux.syscalls.common import MAX_RW_COUNT, E, syscall, user_span

UTSNAME = {
    "sysname": "Linux",
    "nodename": "dbtlab",
    "release": "6.1.0-dbtlab",
    "version": "#1 SMP PREEMPT_DYNAMIC Thu Jan  1 00:00:00 UTC 2026",
    "machine": "riscv64",
    "domainname": "(none)",
}
_UTS_ORDER = ("sysname", "nodename", "release", "version", "machine", "domainname")


def pack_utsname() -> bytes:
    """struct new_utsname: six NUL-padded 65-byte fields (390 bytes)."""
    return b"".join(UTSNAME[k].encode().ljust(65, b"\0")[:65] for k in _UTS_ORDER)


@syscall(160, "uname", ("ptr",))
def sys_uname(proc: Process, buf: int) -> int:
    proc.mem.write(buf, pack_utsname())
    return 0


SYSINFO_TOTALRAM = 8 << 30
SYSINFO_FREERAM = 4 << 30


@syscall(179, "sysinfo", ("ptr",))
def sys_sysinfo(proc: Process, info: int) -> int:
    """struct sysinfo for 64-bit: 112 bytes (uptime, loads[3], 6 memory counters, procs,
    padding, totalhigh, freehigh, mem_unit)."""
    uptime = proc.clock_ns(1) // 10**9
    data = struct.pack("<q3Q6QH6xQQI4x", uptime, 0, 0, 0, SYSINFO_TOTALRAM, SYSINFO_FREERAM,
                       0, 0, 0, 0, 1, 0, 0, 1)
    assert len(data) == 112
    proc.mem.write(info, data)
    return 0


GRND_NONBLOCK, GRND_RANDOM, GRND_INSECURE = 1, 2, 4


@syscall(278, "getrandom", ("ptr", "size", "uint"))
def sys_getrandom(proc: Process, buf: int, count: int, flags: int) -> int:
    if flags & ~(GRND_NONBLOCK | GRND_RANDOM | GRND_INSECURE) or \
            flags & (GRND_RANDOM | GRND_INSECURE) == (GRND_RANDOM | GRND_INSECURE):
        raise SyscallError(E.EINVAL)
    # access_ok on the count as the kernel clamps it (MAX_RW_COUNT), then its per-call cap
    n = user_span(proc, buf, min(count, MAX_RW_COUNT), writable=True, limit=33554431)
    if n == 0:
        return 0
    proc.mem.write(buf, proc.random_bytes(n))
    return n
