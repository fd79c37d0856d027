"""A fuzz case: a small program and the exact machine state it starts from.

The program is a list of *items*. An item is one instruction or a short indivisible group
(``auipc`` + ``jalr``, an LR/SC sequence, a pointer set-up and its AMO); control transfers
name their target as an item index, so instructions can be dropped while minimising and
the branch offsets are recomputed when the case is laid out at an address. The index
``len(items)`` is the terminator, an ``ecall`` that ends every case.

The initial state is complete: x and f registers, fcsr, the LR/SC reservation and the whole
scratch data window of :class:`dbtlab.runtime.oracle.bare.BareMachine`. Reproducer files store it
(see :func:`to_json`), so a case replays bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from dbtlab.runtime.oracle.bare import CODE_BASE, DATA_BASE
from dbtlab.translator.decode import decode, encode

TERMINATOR = encode("ecall")
#: the scratch data window the fuzzer uses (two pages: one page boundary inside)
WINDOW = 0x2000
REPRO_VERSION = 1


def word_bytes(w: int) -> bytes:
    return w.to_bytes(2 if w & 3 != 3 else 4, "little")


def word_len(w: int) -> int:
    return 2 if w & 3 != 3 else 4


@dataclass
class Item:
    """One instruction or an indivisible group of them.

    ``target``: for a control transfer, the index of the item it goes to; ``patch`` is the
    index of the word whose immediate is set to ``target_pc - item_pc`` at layout.
    """

    words: list[int]
    cls: str = ""
    target: int | None = None
    patch: int = 0

    @property
    def size(self) -> int:
        return sum(word_len(w) for w in self.words)

    def to_json(self) -> dict:
        d: dict = {"words": [f"{w:#x}" for w in self.words], "cls": self.cls}
        if self.target is not None:
            d["target"] = self.target
            d["patch"] = self.patch
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Item":
        return cls([int(w, 16) for w in d["words"]], d.get("cls", ""), d.get("target"),
                   d.get("patch", 0))


def _patched(word: int, imm: int) -> int:
    insn = decode(word)
    ops = insn.operands()
    ops["imm"] = imm
    return insn.enc.encode(**ops)


@dataclass
class Case:
    """A program and its initial state (see the module docstring)."""

    items: list[Item]
    x: list[int]
    f: list[int]
    fcsr: int = 0
    mem: bytes = bytes(WINDOW)
    res: tuple[int, int, int] = (0, 0, 0)      # (valid, address, value)
    budget: int = 256
    seed: int | None = None
    index: int | None = None

    def copy(self, **kw) -> "Case":
        c = replace(self, **kw)
        if "items" not in kw:
            c.items = [Item(list(i.words), i.cls, i.target, i.patch) for i in self.items]
        if "x" not in kw:
            c.x = list(self.x)
        if "f" not in kw:
            c.f = list(self.f)
        return c

    @property
    def size(self) -> int:
        """Bytes of code including the terminator."""
        return sum(i.size for i in self.items) + 4

    def n_insns(self) -> int:
        return sum(len(i.words) for i in self.items) + 1

    def layout(self, base: int = CODE_BASE) -> tuple[list[int], list[int]]:
        """(instruction words including the terminator, pc of each item) at ``base``."""
        pcs = []
        pc = base
        for it in self.items:
            pcs.append(pc)
            pc += it.size
        pcs.append(pc)                      # the terminator
        words: list[int] = []
        for k, it in enumerate(self.items):
            if it.target is None:
                words.extend(it.words)
                continue
            t = min(max(it.target, 0), len(self.items))
            ws = list(it.words)
            ws[it.patch] = _patched(ws[it.patch], pcs[t] - pcs[k])
            words.extend(ws)
        words.append(TERMINATOR)
        return words, pcs

    def code(self, base: int = CODE_BASE) -> bytes:
        return b"".join(word_bytes(w) for w in self.layout(base)[0])

    # ---- editing (minimisation) ----------------------------------------------------------
    def without(self, drop: set[int]) -> "Case":
        """The case with the items at indices ``drop`` removed; control transfers into a
        removed item go to the next remaining one."""
        keep = [k for k in range(len(self.items)) if k not in drop]
        new_index = {}
        j = 0
        for k in range(len(self.items) + 1):
            new_index[k] = j
            if k in keep:
                j += 1
        items = []
        for k in keep:
            it = self.items[k]
            t = None if it.target is None else new_index[min(max(it.target, 0),
                                                             len(self.items))]
            items.append(Item(list(it.words), it.cls, t, it.patch))
        return self.copy(items=items)


# ---- reproducer files ------------------------------------------------------------------

def _mem_runs(mem: bytes) -> list[list]:
    """Nonzero parts of the window as [offset, hex] runs (8-byte granularity)."""
    runs: list[list] = []
    n = len(mem)
    k = 0
    zero8 = bytes(8)
    while k < n:
        if mem[k:k + 8] == zero8:
            k += 8
            continue
        start = k
        while k < n and mem[k:k + 8] != zero8:
            k += 8
        runs.append([start, mem[start:k].hex()])
    return runs


def disasm_word(word: int, pc: int) -> str:
    insn = decode(word)
    try:
        from dbtlab.translator.disasm import disasm
        return disasm(insn, pc).replace("\t", " ")
    except Exception:        # noqa: BLE001 - the disassembler never decides a verdict
        return insn.mnemonic


def disassemble(words: list[int], base: int) -> list[str]:
    out = []
    pc = base
    for w in words:
        n = 2 if w & 3 != 3 else 4
        out.append(f"{pc:#x}: {w:0{2 * n}x}  {disasm_word(w, pc)}")
        pc += n
    return out


def state_to_json(c: Case) -> dict:
    return {"x": [f"{v:#x}" for v in c.x], "f": [f"{v:#x}" for v in c.f],
            "fcsr": c.fcsr,
            "reservation": {"valid": c.res[0], "address": f"{c.res[1]:#x}",
                            "value": f"{c.res[2]:#x}"},
            "data_base": f"{DATA_BASE:#x}", "data_size": len(c.mem),
            "memory": _mem_runs(c.mem)}


def case_to_json(c: Case, base: int = CODE_BASE) -> dict:
    words, _ = c.layout(base)
    return {"code_base": f"{base:#x}", "words": [f"{w:#x}" for w in words],
            "disassembly": disassemble(words, base),
            "items": [i.to_json() for i in c.items],
            "initial": state_to_json(c), "budget": c.budget,
            "seed": c.seed, "index": c.index}


def case_from_json(d: dict) -> Case:
    st = d["initial"]
    mem = bytearray(int(st.get("data_size", WINDOW)))
    for off, hx in st.get("memory", []):
        b = bytes.fromhex(hx)
        mem[off:off + len(b)] = b
    if "items" in d:
        items = [Item.from_json(i) for i in d["items"]]
    else:       # only words: one item each, the terminator dropped
        ws = [int(w, 16) for w in d["words"]]
        if ws and ws[-1] == TERMINATOR:
            ws = ws[:-1]
        items = [Item([w]) for w in ws]
    r = st.get("reservation", {})
    return Case(items, [int(v, 16) for v in st["x"]], [int(v, 16) for v in st["f"]],
                int(st.get("fcsr", 0)), bytes(mem),
                (int(r.get("valid", 0)), int(r.get("address", "0"), 16),
                 int(r.get("value", "0"), 16)),
                int(d.get("budget", 256)), d.get("seed"), d.get("index"))


@dataclass
class Layout:
    """Several cases placed one after another in a code region. ``entries`` are the pcs
    where execution can (re)enter translated code: each case's start, the targets of its
    indirect jumps, and the instructions after those that leave translated code and come
    back (fence.i, a static rounding mode the JIT hands to the interpreter)."""

    base: int
    cases: list[Case]
    pcs: list[int] = field(default_factory=list)     # start pc of each case
    code: bytes = b""
    entries: list[int] = field(default_factory=list)

    @classmethod
    def place(cls, cases: list[Case], base: int, limit: int) -> tuple["Layout", list[Case]]:
        """Place as many of ``cases`` as fit below ``base + limit``; return the rest."""
        out = cls(base, [])
        parts = []
        pc = base
        for k, c in enumerate(cases):
            if pc + c.size > base + limit and out.cases:
                return out._done(parts), cases[k:]
            out.cases.append(c)
            out.pcs.append(pc)
            words, item_pcs = c.layout(pc)
            parts.append(b"".join(word_bytes(w) for w in words))
            out.entries.append(pc)
            out.entries += [item_pcs[min(max(it.target, 0), len(c.items))]
                            for it in c.items if it.target is not None and it.patch]
            a = pc
            for w in words:
                a += word_len(w)
                if w in _REENTER or _reenters(w):
                    out.entries.append(a)
            pc += c.size
        return out._done(parts), []

    def _done(self, parts: list[bytes]) -> "Layout":
        self.code = b"".join(parts)
        return self


_REENTER: set[int] = set()


_FP_OPCODES = frozenset({0x43, 0x47, 0x4B, 0x4F, 0x53})


def _reenters(word: int) -> bool:
    """Does execution leave translated code after this instruction and come back?"""
    if word & 3 != 3 or not ((word & 0x707F) == 0x100F or
                             ((word & 0x7F) in _FP_OPCODES and (word >> 12) & 7 == 4)):
        return False              # neither fence.i nor a possible static RMM: no decode
    insn = decode(word)
    if insn.name == "fence.i":
        _REENTER.add(word)
        return True
    if insn.enc is not None and insn.rm == 4 and any(f.name == "rm" for f in insn.enc.operands):
        _REENTER.add(word)         # round-to-nearest-max-magnitude: the interpreter runs it
        return True
    return False
