"""``dbtlab disas``: objdump-style disassembly of a guest program or one of its functions."""

from __future__ import annotations

from typing import Iterator

from dbtlab.runtime.errors import DbtError
from dbtlab.runtime.linux.loader import StartConfig, load_elf
from dbtlab.runtime.linux.memory import GuestMemory
from dbtlab.translator.disasm import elf_listing


def disassemble_program(path: str, function: str | None = None) -> Iterator[str]:
    """Lines as ``riscv64-linux-gnu-objdump -d`` prints them (the whole .text, or the one
    function). The file is validated as the loader would (a clear error otherwise)."""
    mem = GuestMemory()
    try:
        prog = load_elf(mem, path, StartConfig(argv=[path], env=[], exec_path=path))
    finally:
        mem.close()
    if function is not None and function not in set(prog.symbols.values()):
        raise DbtError(f"{path}: no function named {function!r} in its symbol table")
    lines = elf_listing(path)
    if function is None:
        yield f"\n{path}:     file format elf64-littleriscv\n"
        yield "\nDisassembly of section .text:"
        yield from lines
        return
    header = f"<{function}>:"
    inside = False
    for line in lines:
        if line.endswith(">:") and line.lstrip("\n").split(" ", 1)[-1].startswith("<"):
            if inside:
                return
            inside = line.endswith(header)
        if inside:
            yield line
