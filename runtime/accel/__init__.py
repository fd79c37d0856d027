"""Accelerators: how guest code is executed (the machine around it is shared)."""

from __future__ import annotations

from dbtlab.runtime.errors import DbtError


def make_accel(name: str, machine):
    """The accelerator registry (imports lazily: unicorn and llvmlite load only if used)."""
    if name == "interp":
        from dbtlab.runtime.accel.interp import InterpAccel
        return InterpAccel(machine)
    if name == "llvm":
        from dbtlab.runtime.accel.llvm import LLVMAccel
        return LLVMAccel(machine)
    if name == "unicorn":
        from dbtlab.runtime.accel.unicorn import UnicornAccel
        return UnicornAccel(machine)
    raise DbtError(f"unknown accelerator {name!r} (choose from llvm, interp, unicorn)")
