"""Process and identity: exit, ids, thread bookkeeping, futex, resource limits,
scheduling. The process is single-threaded: clone is not implemented (ENOSYS)."""

from __future__ import annotations

import logging

from dbtlab.runtime.errors import DbtError
from dbtlab.runtime.linux.process import (RLIM_INFINITY, RLIMIT_NLIMITS, Process, SyscallError)
from dbtlab.runtime.linux.syscalls.common import (E, read_struct, sleep_for, syscall,
                                                 timespec_ns, write_struct)

log = logging.getLogger(__name__)


@syscall(93, "exit", ("int",), ret="none")
def sys_exit(proc: Process, status: int) -> int:
    proc.exit_status = status & 0xFF
    return 0


@syscall(94, "exit_group", ("int",), ret="none")
def sys_exit_group(proc: Process, status: int) -> int:
    proc.exit_status = status & 0xFF
    return 0


@syscall(172, "getpid", ())
def sys_getpid(proc: Process) -> int:
    return proc.pid


@syscall(173, "getppid", ())
def sys_getppid(proc: Process) -> int:
    return proc.ppid


@syscall(178, "gettid", ())
def sys_gettid(proc: Process) -> int:
    return proc.tid


@syscall(174, "getuid", ())
def sys_getuid(proc: Process) -> int:
    return proc.uid


@syscall(175, "geteuid", ())
def sys_geteuid(proc: Process) -> int:
    return proc.euid


@syscall(176, "getgid", ())
def sys_getgid(proc: Process) -> int:
    return proc.gid


@syscall(177, "getegid", ())
def sys_getegid(proc: Process) -> int:
    return proc.egid


@syscall(148, "getresuid", ("ptr", "ptr", "ptr"))
def sys_getresuid(proc: Process, r: int, e: int, s: int) -> int:
    for addr, v in ((r, proc.uid), (e, proc.euid), (s, proc.euid)):
        write_struct(proc, addr, "<I", v)
    return 0


@syscall(150, "getresgid", ("ptr", "ptr", "ptr"))
def sys_getresgid(proc: Process, r: int, e: int, s: int) -> int:
    for addr, v in ((r, proc.gid), (e, proc.egid), (s, proc.egid)):
        write_struct(proc, addr, "<I", v)
    return 0


@syscall(158, "getgroups", ("int", "ptr"))
def sys_getgroups(proc: Process, size: int, lst: int) -> int:
    if size < 0:
        raise SyscallError(E.EINVAL)
    return 0                                           # no supplementary groups


@syscall(155, "getpgid", ("pid",))
def sys_getpgid(proc: Process, pid: int) -> int:
    if pid not in (0, proc.pid):
        raise SyscallError(E.ESRCH)
    return proc.pid


@syscall(156, "getsid", ("pid",))
def sys_getsid(proc: Process, pid: int) -> int:
    return sys_getpgid(proc, pid)


@syscall(154, "setpgid", ("pid", "pid"))
def sys_setpgid(proc: Process, pid: int, pgid: int) -> int:
    if pid not in (0, proc.pid) or pgid not in (0, proc.pid):
        raise SyscallError(E.EPERM)
    return 0


@syscall(96, "set_tid_address", ("ptr",))
def sys_set_tid_address(proc: Process, tidptr: int) -> int:
    proc.clear_child_tid = tidptr
    return proc.tid


@syscall(99, "set_robust_list", ("ptr", "size"))
def sys_set_robust_list(proc: Process, head: int, length: int) -> int:
    if length != 24:                                  # sizeof(struct robust_list_head)
        raise SyscallError(E.EINVAL)
    proc.robust_list = (head, length)
    return 0


@syscall(100, "get_robust_list", ("pid", "ptr", "ptr"))
def sys_get_robust_list(proc: Process, pid: int, head_ptr: int, len_ptr: int) -> int:
    if pid not in (0, proc.tid):
        raise SyscallError(E.ESRCH)
    write_struct(proc, head_ptr, "<Q", proc.robust_list[0])
    write_struct(proc, len_ptr, "<Q", proc.robust_list[1] or 24)
    return 0


@syscall(293, "rseq", ("ptr", "uint", "int", "hex32"))
def sys_rseq(proc: Process, rseq: int, length: int, flags: int, sig: int) -> int:
    raise SyscallError(E.ENOSYS)          # glibc then does without restartable sequences


# ---- futex ---------------------------------------------------------------------------------
FUTEX_WAIT, FUTEX_WAKE, FUTEX_FD, FUTEX_REQUEUE, FUTEX_CMP_REQUEUE = 0, 1, 2, 3, 4
FUTEX_WAKE_OP, FUTEX_LOCK_PI, FUTEX_UNLOCK_PI, FUTEX_TRYLOCK_PI = 5, 6, 7, 8
FUTEX_WAIT_BITSET, FUTEX_WAKE_BITSET = 9, 10
FUTEX_PRIVATE_FLAG, FUTEX_CLOCK_REALTIME = 128, 256
FUTEX_NAMES = {0: "FUTEX_WAIT", 1: "FUTEX_WAKE", 3: "FUTEX_REQUEUE", 4: "FUTEX_CMP_REQUEUE",
               5: "FUTEX_WAKE_OP", 6: "FUTEX_LOCK_PI", 7: "FUTEX_UNLOCK_PI",
               9: "FUTEX_WAIT_BITSET", 10: "FUTEX_WAKE_BITSET"}


@syscall(98, "futex", ("ptr", "futexop", "int", "ptr", "ptr", "int"))
def sys_futex(proc: Process, uaddr: int, op: int, val: int, timeout: int, uaddr2: int,
              val3: int) -> int:
    """One thread: a wake finds no waiter; a wait either fails (value changed, EAGAIN),
    times out (virtual/host time passes), or would block forever — a guest deadlock,
    reported as a DbtError."""
    cmd = op & ~(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME)
    if uaddr & 3:
        raise SyscallError(E.EINVAL)
    if cmd in (FUTEX_WAIT, FUTEX_WAIT_BITSET):
        if cmd == FUTEX_WAIT_BITSET and val3 & 0xFFFFFFFF == 0:
            raise SyscallError(E.EINVAL)
        cur = proc.mem.load(uaddr, 4)
        if cur != val & 0xFFFFFFFF:
            raise SyscallError(E.EAGAIN)
        if timeout:
            ns = timespec_ns(proc, timeout)
            if cmd == FUTEX_WAIT_BITSET:           # absolute time on the chosen clock
                ns -= proc.clock_ns(0 if op & FUTEX_CLOCK_REALTIME else 1)
            sleep_for(proc, ns)
            raise SyscallError(E.ETIMEDOUT)
        raise DbtError(f"guest deadlock: futex wait on {uaddr:#x} (value {cur}) with no "
                       "other thread to wake it")
    if cmd in (FUTEX_WAKE, FUTEX_WAKE_BITSET):
        if cmd == FUTEX_WAKE_BITSET and val3 & 0xFFFFFFFF == 0:
            raise SyscallError(E.EINVAL)
        return 0
    if cmd in (FUTEX_REQUEUE, FUTEX_CMP_REQUEUE):
        if cmd == FUTEX_CMP_REQUEUE and proc.mem.load(uaddr, 4) != val3 & 0xFFFFFFFF:
            raise SyscallError(E.EAGAIN)
        return 0
    if cmd == FUTEX_WAKE_OP:
        # *uaddr2 = op(*uaddr2, oparg); wakes nobody
        old = proc.mem.load(uaddr2, 4)
        opc, cmp_, oparg = (val3 >> 28) & 0xF, (val3 >> 24) & 0xF, (val3 >> 12) & 0xFFF
        if opc & 8:
            oparg = 1 << (oparg & 31)
            opc &= 7
        if oparg & 0x800:
            oparg -= 0x1000
        new = {0: oparg, 1: old + oparg, 2: old | oparg, 3: old & ~oparg, 4: old ^ oparg}.get(opc)
        if new is None:
            raise SyscallError(E.ENOSYS)
        proc.mem.store(uaddr2, 4, new & 0xFFFFFFFF)
        return 0
    if cmd == FUTEX_UNLOCK_PI:
        proc.mem.store(uaddr, 4, 0)
        return 0
    raise SyscallError(E.ENOSYS)


# ---- limits and scheduling -----------------------------------------------------------------
def _get_rlimit(proc: Process, res: int) -> tuple[int, int]:
    return proc.rlimits.get(res, (RLIM_INFINITY, RLIM_INFINITY))


@syscall(261, "prlimit64", ("pid", "int", "ptr", "ptr"))
def sys_prlimit64(proc: Process, pid: int, resource: int, new: int, old: int) -> int:
    if pid not in (0, proc.pid):
        raise SyscallError(E.ESRCH)
    if not 0 <= resource < RLIMIT_NLIMITS:
        raise SyscallError(E.EINVAL)
    cur = _get_rlimit(proc, resource)
    lim = None
    if new:
        lim = read_struct(proc, new, "<QQ")
        if lim[0] > lim[1]:
            raise SyscallError(E.EINVAL)
        if lim[1] > cur[1]:
            raise SyscallError(E.EPERM)
    if old:
        write_struct(proc, old, "<QQ", *cur)
    if lim is not None:
        proc.rlimits[resource] = lim
    return 0


@syscall(163, "getrlimit", ("int", "ptr"))
def sys_getrlimit(proc: Process, resource: int, rlim: int) -> int:
    return sys_prlimit64(proc, 0, resource, 0, rlim)


@syscall(164, "setrlimit", ("int", "ptr"))
def sys_setrlimit(proc: Process, resource: int, rlim: int) -> int:
    return sys_prlimit64(proc, 0, resource, rlim, 0)


@syscall(123, "sched_getaffinity", ("pid", "uint", "ptr"))
def sys_sched_getaffinity(proc: Process, pid: int, size: int, mask: int) -> int:
    """One CPU (CPU 0), whatever the host has: the guest is single-threaded and answers
    must not depend on the host. Returns the mask size in bytes, as the kernel does."""
    if pid not in (0, proc.pid):
        raise SyscallError(E.ESRCH)
    if size < 8 or size & 7:
        raise SyscallError(E.EINVAL)
    write_struct(proc, mask, "<Q", 1)
    return 8


@syscall(122, "sched_setaffinity", ("pid", "uint", "ptr"))
def sys_sched_setaffinity(proc: Process, pid: int, size: int, mask: int) -> int:
    if pid not in (0, proc.pid):
        raise SyscallError(E.ESRCH)
    if size and not proc.mem.load(mask, 1) & 1:
        raise SyscallError(E.EINVAL)
    return 0


@syscall(124, "sched_yield", ())
def sys_sched_yield(proc: Process) -> int:
    return 0


@syscall(120, "sched_getscheduler", ("pid",))
def sys_sched_getscheduler(proc: Process, pid: int) -> int:
    if pid not in (0, proc.pid):
        raise SyscallError(E.ESRCH)
    return 0                                            # SCHED_OTHER


@syscall(121, "sched_getparam", ("pid", "ptr"))
def sys_sched_getparam(proc: Process, pid: int, param: int) -> int:
    if pid not in (0, proc.pid):
        raise SyscallError(E.ESRCH)
    write_struct(proc, param, "<i", 0)
    return 0


@syscall(141, "getpriority", ("int", "int"))
def sys_getpriority(proc: Process, which: int, who: int) -> int:
    return 20                                           # nice 0, as the kernel encodes it


@syscall(92, "personality", ("hex32",))
def sys_personality(proc: Process, persona: int) -> int:
    return 0                                            # PER_LINUX


MEMBARRIER_SUPPORTED = 0x1 | 0x8 | 0x10                # GLOBAL, PRIVATE_EXPEDITED (+register)


@syscall(283, "membarrier", ("int", "uint", "int"))
def sys_membarrier(proc: Process, cmd: int, flags: int, cpu_id: int) -> int:
    """One thread: every barrier is trivially complete."""
    if cmd == 0:                                        # MEMBARRIER_CMD_QUERY
        return MEMBARRIER_SUPPORTED
    if cmd & MEMBARRIER_SUPPORTED == cmd and cmd and cmd & (cmd - 1) == 0:
        return 0
    raise SyscallError(E.EINVAL)


PR_SET_NAME, PR_GET_NAME = 15, 16


@syscall(167, "prctl", ("int", "hex", "hex", "hex", "hex"))
def sys_prctl(proc: Process, option: int, a2: int, a3: int, a4: int, a5: int) -> int:
    if option == PR_SET_NAME:
        proc.comm = proc.mem.read_cstring(a2, 16)[:15].decode("latin-1")
        return 0
    if option == PR_GET_NAME:
        proc.mem.write(a2, proc.comm.encode("latin-1")[:15].ljust(16, b"\0"))
        return 0
    raise SyscallError(E.EINVAL)
