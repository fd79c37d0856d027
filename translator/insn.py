"""A decoded instruction: the encoding it matched, its operands, its semantics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from dbtlab.translator.encoding import Encoding


class Insn:
    """One decoded instruction word. Independent of its address, so decodes can be cached.

    ``name`` is the instruction whose semantics run (a compressed instruction has the name
    of its expansion), ``mnemonic`` the encoding as written (``c.addi``), ``sem`` the
    semantics function. Operands not used by the encoding are 0.
    """

    __slots__ = ("name", "mnemonic", "word", "length", "sem", "enc", "rd", "rs1", "rs2",
                 "rs3", "imm", "rm", "csr", "aq", "rl", "fm", "pred", "succ", "reason")

    def __init__(self, name: str, mnemonic: str, word: int, length: int,
                 sem: Callable, enc: "Encoding | None" = None) -> None:
        self.name = name
        self.mnemonic = mnemonic
        self.word = word
        self.length = length
        self.sem = sem
        self.enc = enc
        self.rd = self.rs1 = self.rs2 = self.rs3 = 0
        self.imm = self.rm = self.csr = self.aq = self.rl = 0
        self.fm = self.pred = self.succ = 0
        self.reason = ""   # why an encoding is illegal (for messages)

    @property
    def is_illegal(self) -> bool:
        return self.name == "illegal"

    @property
    def compressed(self) -> bool:
        return self.length == 2

    def hex(self) -> str:
        return f"{self.word:0{self.length * 2}x}"

    def operands(self) -> dict[str, int]:
        """The operands the encoding defines (for traces and reproducers)."""
        if self.enc is None:
            return {}
        out = {}
        for f in self.enc.operands:
            for a in f.attrs:
                out[a] = getattr(self, a)
        out.update(self.enc.fixed)
        return out

    def __repr__(self) -> str:
        ops = ", ".join(f"{k}={v}" for k, v in self.operands().items())
        return f"<Insn {self.mnemonic} {self.hex()} {ops}>"
