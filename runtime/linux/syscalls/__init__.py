"""The Linux syscall layer for riscv64 guests (asm-generic numbering).

``handle_syscall(proc, cpu)`` is what every accelerator's ecall ends in: the number is in
a7, the arguments in a0..a5, the result (or -errno) goes to a0; the pc is left alone (the
Machine steps over the ecall). Handlers live by family in fs, mm, time, proc, signal and
info; ``TABLE`` maps number -> ``Syscall`` (name, handler, argument kinds for strace).

Failures are the guest's, never dbtlab's: an unknown syscall returns -ENOSYS with one
warning per number, a bad guest pointer -EFAULT, a host error its errno. Only a guest
deadlock (a futex wait nothing can end) raises, as a ``DbtError``.
"""

from __future__ import annotations

import errno
import logging

from dbtlab.ir.state import CPUState
from dbtlab.runtime.linux.memory import GuestFault
from dbtlab.runtime.linux.process import Process, SyscallError
from dbtlab.runtime.linux.syscalls.common import TABLE, Syscall, convert, syscall
from dbtlab.runtime.linux.syscalls.names import NAMES, NUMBERS

# registering imports: each module adds its handlers to TABLE
from dbtlab.runtime.linux.syscalls import fs, info, mm, proc, signal, time  # noqa: E402,F401
from dbtlab.runtime.linux.syscalls import strace as _strace  # noqa: E402

log = logging.getLogger(__name__)

__all__ = ["handle_syscall", "TABLE", "NAMES", "NUMBERS", "Syscall", "SyscallError",
           "syscall", "syscall_name"]

_MASK64 = (1 << 64) - 1


def syscall_name(nr: int) -> str:
    sc = TABLE.get(nr)
    if sc is not None:
        return sc.name
    return NAMES.get(nr, f"syscall_{nr}")


def handle_syscall(proc: Process, cpu: CPUState) -> None:
    """Run the syscall the guest asked for and put the result in a0."""
    x = cpu.x
    nr = x[17]
    raw = [x[10], x[11], x[12], x[13], x[14], x[15]]
    sc = TABLE.get(nr)
    name = syscall_name(nr)
    if sc is None:
        args = raw
    else:
        args = [convert(k, raw[i]) for i, k in enumerate(sc.args)]

    if sc is None:
        proc.warn_once(("nosys", nr), "unsupported syscall %d (%s): returning -ENOSYS",
                       nr, name)
    stream = None
    was_killed = proc.killed_by is not None
    if proc.strace:
        stream = proc.trace_stream
        stream.write(_strace.format_call(proc, sc, name, args))
        stream.flush()

    ret = 0
    finished = False
    try:
        if sc is None:
            ret = -errno.ENOSYS
        else:
            try:
                ret = sc.handler(proc, *args)
            except SyscallError as e:
                ret = -e.errno
            except GuestFault:
                ret = -errno.EFAULT
            except OSError as e:
                ret = -(e.errno or errno.EIO)
            except OverflowError:
                ret = -errno.EINVAL
        finished = True
    finally:
        if stream is not None:
            if finished:
                stream.write(_strace.format_result(proc, sc, args, ret) + "\n")
                if proc.killed_by is not None and not was_killed:
                    stream.write(_strace.format_kill(proc))
            else:
                stream.write(" = ?\n")
            stream.flush()

    if sc is None or sc.ret != "none":
        x[10] = ret & _MASK64
