"""Host faults in translated code become precise guest exits.

Translated code touches guest memory through the guest view with no software check (see
``dbtlab.runtime.linux.memory``). When the guest may not make an access — an unmapped page, a
read-only page, a page write-protected because it holds translated code, an address beyond
the guest address space — the host raises SIGSEGV. Our handler, installed once per
process and written in LLVM IR like the rest of the native code:

1. checks that the fault is ours: a JIT environment is active on this process and the
   faulting address lies in its guest view (anything else goes to the previous handler,
   e.g. Python's faulthandler, or the default action);
2. records the host pc and the page-fault error code, folds the interrupted context's FP
   exception flags (from the saved MXCSR) into the guest's fflags;
3. ``siglongjmp``\\s back into the dispatcher, which returns EXIT_HOSTFAULT.

Every block stores the guest pc of an instruction before it first touches memory, and
commits register writes only when an instruction completes, so the guest state at the
fault is exactly the state before the faulting instruction. The runtime then re-executes
that one instruction in the reference interpreter, which either reports the precise guest
fault (address, kind) or — for a store into translated code — performs it after the
translations there are invalidated.

One vCPU thread at a time may run translated code in a process (``ACTIVE_LOCK``).
"""

from __future__ import annotations

import ctypes
import signal
import threading

import llvmlite.binding as llvm

from dbtlab.ir.env import JMPBUF_OFF
from dbtlab.ir.state import offset
from dbtlab.ir.support_ir import flags_x86_to_rv
from dbtlab.ir.abi import ADDR_LIMIT, GUARD_SIZE

SA_SIGINFO = 0x4
SA_ONSTACK = 0x08000000
SA_NODEFER = 0x40000000


class _SigAction(ctypes.Structure):
    _fields_ = [("handler", ctypes.c_void_p), ("mask", ctypes.c_uint64 * 16),
                ("flags", ctypes.c_int), ("restorer", ctypes.c_void_p)]


# ucontext_t (x86-64 glibc): uc_mcontext at 40; gregs[REG_ERR=19] at 40+152,
# gregs[REG_RIP=16] at 40+128, fpregs pointer at 40+184; fxsave mxcsr at +24.
HANDLER_IR = r"""
@dbt_active = global ptr null
@dbt_prev_handler = global ptr null
@dbt_prev_flags = global i64 0
@dbt_prev_action = global [160 x i8] zeroinitializer
@dbt_hits = global i64 0

declare void @siglongjmp(ptr, i32) noreturn
declare i32 @sigaction(i32, ptr, ptr)

@FLAGS_FN@
define void @dbt_on_fault(i32 %sig, ptr %info, ptr %uc) {
entry:
  %env = load ptr, ptr @dbt_active
  %none = icmp eq ptr %env, null
  br i1 %none, label %chain, label %check
check:
  %ap = getelementptr i8, ptr %info, i64 16
  %addr = load i64, ptr %ap
  %gbp = getelementptr i8, ptr %env, i64 @OFF_GUEST_BASE@
  %gb = load i64, ptr %gbp
  %off = sub i64 %addr, %gb
  %ours = icmp ult i64 %off, @SPAN@
  br i1 %ours, label %mine, label %chain
mine:
  %h = load i64, ptr @dbt_hits
  %h2 = add i64 %h, 1
  store i64 %h2, ptr @dbt_hits
  %ripp = getelementptr i8, ptr %uc, i64 168
  %rip = load i64, ptr %ripp
  %hpc = getelementptr i8, ptr %env, i64 @OFF_HOST_PC@
  store i64 %rip, ptr %hpc
  %errp = getelementptr i8, ptr %uc, i64 192
  %err = load i64, ptr %errp
  %herr = getelementptr i8, ptr %env, i64 @OFF_HOST_ERR@
  store i64 %err, ptr %herr
  %fa = getelementptr i8, ptr %env, i64 @OFF_FAULT_ADDR@
  store i64 %off, ptr %fa
  %fpp = getelementptr i8, ptr %uc, i64 224
  %fpregs = load ptr, ptr %fpp
  %hasfp = icmp ne ptr %fpregs, null
  br i1 %hasfp, label %fp, label %jump
fp:
  %mxp = getelementptr i8, ptr %fpregs, i64 24
  %mx = load i32, ptr %mxp
  %fl = call i64 @flags_x86_to_rv(i32 %mx)
  %ffp = getelementptr i8, ptr %env, i64 @OFF_FFLAGS@
  %old = load i64, ptr %ffp
  %new = or i64 %old, %fl
  store i64 %new, ptr %ffp
  br label %jump
jump:
  %jb = getelementptr i8, ptr %env, i64 @JMPBUF_OFF@
  call void @siglongjmp(ptr %jb, i32 1)
  unreachable
chain:
  %prev = load ptr, ptr @dbt_prev_handler
  %pi = ptrtoint ptr %prev to i64
  %special = icmp ult i64 %pi, 2
  br i1 %special, label %restore, label %call
call:
  call void %prev(i32 %sig, ptr %info, ptr %uc)
  ret void
restore:
  ; SIG_DFL / SIG_IGN: reinstate it and return; the access faults again and the
  ; default action happens
  %r = call i32 @sigaction(i32 %sig, ptr @dbt_prev_action, ptr null)
  ret void
}
"""

_engine = None
_active = None          # ctypes view of @dbt_active
_hits = None
ACTIVE_LOCK = threading.Lock()
_libc = ctypes.CDLL(None, use_errno=True)


def _symbol(name: str) -> int:
    return ctypes.cast(getattr(_libc, name), ctypes.c_void_p).value


def install() -> None:
    """Compile the handler (once per process) and install it for SIGSEGV, chaining to
    whatever was installed before. (The guest view's guard pages lie inside the backing
    file, so no access to it can raise SIGBUS.)"""
    global _engine, _active, _hits
    if _engine is not None:
        return
    from dbtlab.ir.jit import init_llvm
    init_llvm()
    llvm.add_symbol("siglongjmp", _symbol("siglongjmp"))
    llvm.add_symbol("sigaction", _symbol("sigaction"))
    text = HANDLER_IR
    for k, v in {"OFF_GUEST_BASE": offset("guest_base"), "SPAN": ADDR_LIMIT + GUARD_SIZE,
                 "OFF_HOST_PC": offset("host_pc"), "OFF_HOST_ERR": offset("host_err"),
                 "OFF_FAULT_ADDR": offset("fault_addr"), "OFF_FFLAGS": offset("fflags"),
                 "JMPBUF_OFF": JMPBUF_OFF,
                 "FLAGS_FN": flags_x86_to_rv("flags_x86_to_rv", "internal")}.items():
        text = text.replace(f"@{k}@", str(v))
    mod = llvm.parse_assembly(text)
    mod.verify()
    tm = llvm.Target.from_default_triple().create_target_machine(opt=2)
    engine = llvm.create_mcjit_compiler(mod, tm)
    engine.finalize_object()
    handler = engine.get_function_address("dbt_on_fault")
    _active = ctypes.c_void_p.from_address(engine.get_global_value_address("dbt_active"))
    _hits = ctypes.c_int64.from_address(engine.get_global_value_address("dbt_hits"))
    prev_handler = ctypes.c_void_p.from_address(
        engine.get_global_value_address("dbt_prev_handler"))
    prev_action = engine.get_global_value_address("dbt_prev_action")
    _libc.sigaction.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    new = _SigAction()
    new.handler = handler
    new.flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER
    old = _SigAction()
    if _libc.sigaction(int(signal.SIGSEGV), ctypes.byref(new), ctypes.byref(old)) != 0:
        raise OSError(ctypes.get_errno(), "sigaction failed")
    prev_handler.value = old.handler
    ctypes.memmove(prev_action, ctypes.byref(old), ctypes.sizeof(old))
    _engine = engine


def set_active(env_address: int | None) -> None:
    """Tell the handler which environment's translated code is running (None: none)."""
    _active.value = env_address


def hits() -> int:
    """Host faults handled so far in this process."""
    return _hits.value if _hits is not None else 0
