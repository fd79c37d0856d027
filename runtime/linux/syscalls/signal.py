"""Signals: dispositions and the mask are recorded; signals sent to ourselves take effect
as described in process.py (default actions only; guest handlers are not run).

riscv64 uses the asm-generic ``struct sigaction`` without sa_restorer: handler, flags,
mask (8 bytes each); the kernel sigset is 8 bytes, so sigsetsize must be 8."""

from __future__ import annotations

from dbtlab.runtime.linux.process import NSIG, SIGKILL, SIGSTOP, Process, SyscallError
from dbtlab.runtime.linux.syscalls.common import E, read_struct, syscall, write_struct

SIG_BLOCK, SIG_UNBLOCK, SIG_SETMASK = 0, 1, 2
HOW_NAMES = {0: "SIG_BLOCK", 1: "SIG_UNBLOCK", 2: "SIG_SETMASK"}
_UNBLOCKABLE = (1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1))
_MASK64 = (1 << 64) - 1


@syscall(134, "rt_sigaction", ("sig", "ptr", "ptr", "size"))
def sys_rt_sigaction(proc: Process, sig: int, act: int, oact: int, sigsetsize: int) -> int:
    if sigsetsize != 8 or not 1 <= sig <= NSIG:
        raise SyscallError(E.EINVAL)
    new = read_struct(proc, act, "<QQQ") if act else None
    if new is not None and sig in (SIGKILL, SIGSTOP):
        raise SyscallError(E.EINVAL)
    if oact:
        write_struct(proc, oact, "<QQQ", *proc.sigactions.get(sig, (0, 0, 0)))
    if new is not None:
        handler, flags, mask = new
        proc.sigactions[sig] = (handler, flags, mask & ~_UNBLOCKABLE)
        if handler == 1:                                    # SIG_IGN discards pending
            proc.pending.discard(sig)
    return 0


@syscall(135, "rt_sigprocmask", ("how", "ptr", "ptr", "size"))
def sys_rt_sigprocmask(proc: Process, how: int, set_: int, oset: int, sigsetsize: int) -> int:
    if sigsetsize != 8:
        raise SyscallError(E.EINVAL)
    new = None
    if set_:
        if how not in (SIG_BLOCK, SIG_UNBLOCK, SIG_SETMASK):
            raise SyscallError(E.EINVAL)
        new = read_struct(proc, set_, "<Q")[0]
    if oset:
        write_struct(proc, oset, "<Q", proc.sigmask)
    if new is not None:
        if how == SIG_BLOCK:
            proc.sigmask |= new
        elif how == SIG_UNBLOCK:
            proc.sigmask &= ~new
        else:
            proc.sigmask = new
        proc.sigmask &= _MASK64 & ~_UNBLOCKABLE
        proc.deliver_pending()
    return 0


@syscall(136, "rt_sigpending", ("ptr", "size"))
def sys_rt_sigpending(proc: Process, set_: int, sigsetsize: int) -> int:
    if sigsetsize > 8:
        raise SyscallError(E.EINVAL)
    mask = 0
    for s in proc.pending:
        mask |= 1 << (s - 1)
    proc.mem.write(set_, mask.to_bytes(8, "little")[:sigsetsize])
    return 0


@syscall(132, "sigaltstack", ("ptr", "ptr"))
def sys_sigaltstack(proc: Process, ss: int, old_ss: int) -> int:
    new = read_struct(proc, ss, "<QiiQ") if ss else None
    if old_ss:
        sp, flags, size = proc.sigaltstack
        write_struct(proc, old_ss, "<QiiQ", sp, flags, 0, size)
    if new is not None:
        sp, flags, _pad, size = new
        if flags not in (0, 2):                             # 0 or SS_DISABLE
            raise SyscallError(E.EINVAL)
        if flags == 0 and size < 2048:                      # MINSIGSTKSZ
            raise SyscallError(E.ENOMEM)
        proc.sigaltstack = (sp, flags, size)
    return 0


def _check_sig(sig: int) -> None:
    if not 0 <= sig <= NSIG:
        raise SyscallError(E.EINVAL)


@syscall(129, "kill", ("pid", "sig"))
def sys_kill(proc: Process, pid: int, sig: int) -> int:
    _check_sig(sig)
    if pid in (proc.pid, 0, -1) or pid == -proc.pid:
        proc.send_signal(sig)
        return 0
    raise SyscallError(E.ESRCH if pid > 0 else E.EPERM)


@syscall(130, "tkill", ("pid", "sig"))
def sys_tkill(proc: Process, tid: int, sig: int) -> int:
    _check_sig(sig)
    if tid <= 0:
        raise SyscallError(E.EINVAL)
    if tid != proc.tid:
        raise SyscallError(E.ESRCH)
    proc.send_signal(sig)
    return 0


@syscall(131, "tgkill", ("pid", "pid", "sig"))
def sys_tgkill(proc: Process, tgid: int, tid: int, sig: int) -> int:
    _check_sig(sig)
    if tgid <= 0 or tid <= 0:
        raise SyscallError(E.EINVAL)
    if tgid != proc.pid or tid != proc.tid:
        raise SyscallError(E.ESRCH)
    proc.send_signal(sig)
    return 0
