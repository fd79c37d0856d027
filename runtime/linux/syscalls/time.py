"""Clocks and sleeping. In ``time_mode="virtual"`` (see process.py) every value derives
from the retired-instruction count and sleeps only advance guest time, so runs are
reproducible and identical across accelerators."""

from __future__ import annotations

from dbtlab.runtime.linux.memory import GuestFault
from dbtlab.runtime.linux.process import Process, SyscallError
from dbtlab.runtime.linux.syscalls.common import (E, read_struct, sleep_for, syscall,
                                            timespec_ns, write_struct, write_timespec)

CLOCK_NAMES = {0: "CLOCK_REALTIME", 1: "CLOCK_MONOTONIC", 2: "CLOCK_PROCESS_CPUTIME_ID",
               3: "CLOCK_THREAD_CPUTIME_ID", 4: "CLOCK_MONOTONIC_RAW",
               5: "CLOCK_REALTIME_COARSE", 6: "CLOCK_MONOTONIC_COARSE", 7: "CLOCK_BOOTTIME",
               8: "CLOCK_REALTIME_ALARM", 9: "CLOCK_BOOTTIME_ALARM", 11: "CLOCK_TAI"}
TIMER_ABSTIME = 1
COARSE_RES_NS = 4_000_000          # 1/HZ with HZ=250


def _fmt_timespec_out(proc: Process, args: tuple, ret: int) -> str:
    """strace: the timespec a successful clock_gettime wrote (qemu prints it too)."""
    if ret != 0:
        return ""
    try:
        sec, nsec = read_struct(proc, args[1], "<qq")
    except GuestFault:
        return ""
    return f" ({{tv_sec = {sec},tv_nsec = {nsec}}})"


@syscall(113, "clock_gettime", ("clock", "ptr"), post=_fmt_timespec_out)
def sys_clock_gettime(proc: Process, clock: int, tp: int) -> int:
    ns = proc.clock_ns(clock)
    write_timespec(proc, tp, ns)
    return 0


@syscall(114, "clock_getres", ("clock", "ptr"))
def sys_clock_getres(proc: Process, clock: int, res: int) -> int:
    proc.clock_ns(clock)                               # EINVAL for unknown clocks
    if res:
        write_timespec(proc, res, COARSE_RES_NS if clock in (5, 6) else 1)
    return 0


@syscall(169, "gettimeofday", ("ptr", "ptr"))
def sys_gettimeofday(proc: Process, tv: int, tz: int) -> int:
    ns = proc.clock_ns(0)
    if tv:
        write_struct(proc, tv, "<qq", ns // 10**9, (ns % 10**9) // 1000)
    if tz:
        write_struct(proc, tz, "<ii", 0, 0)
    return 0


@syscall(101, "nanosleep", ("timespec", "ptr"))
def sys_nanosleep(proc: Process, req: int, rem: int) -> int:
    sleep_for(proc, timespec_ns(proc, req))
    return 0


@syscall(115, "clock_nanosleep", ("clock", "int", "timespec", "ptr"))
def sys_clock_nanosleep(proc: Process, clock: int, flags: int, req: int, rem: int) -> int:
    if clock in (2, 3):
        raise SyscallError(E.EINVAL if clock == 3 else E.ENOTSUP)
    now = proc.clock_ns(clock)
    ns = timespec_ns(proc, req)
    sleep_for(proc, ns - now if flags & TIMER_ABSTIME else ns)
    return 0


@syscall(153, "times", ("ptr",))
def sys_times(proc: Process, buf: int) -> int:
    """struct tms in clock ticks (AT_CLKTCK = 100); returns ticks since "boot"."""
    cpu = proc.cpu_ns() // 10_000_000
    if buf:
        write_struct(proc, buf, "<qqqq", cpu, 0, 0, 0)
    return proc.clock_ns(1) // 10_000_000


@syscall(165, "getrusage", ("int", "ptr"))
def sys_getrusage(proc: Process, who: int, usage: int) -> int:
    if who not in (0, -1, 1):                          # SELF, CHILDREN, THREAD
        raise SyscallError(E.EINVAL)
    cpu = proc.cpu_ns() if who != -1 else 0
    fields = [cpu // 10**9, (cpu % 10**9) // 1000, 0, 0] + [0] * 14
    write_struct(proc, usage, "<18q", *fields)
    return 0
