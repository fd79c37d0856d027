"""The RV64GC decoder, built from the extension modules' encoding tables.

``decode(word)`` never raises: anything that is not a defined RV64GC user-level
instruction (including reserved compressed encodings and static rounding modes 5 and 6)
decodes to an ``illegal`` instruction whose semantics raise SIGILL at run time.
"""

from __future__ import annotations

from functools import lru_cache

from dbtlab.translator import (rv64a, rv64c, rv64d, rv64f, rv64i, rv64m, zicsr,  # noqa: F401
                               zifencei)
from dbtlab.translator.encoding import Encoding, parse_table
from dbtlab.translator.families import SEMANTICS
from dbtlab.translator.insn import Insn

EXTENSIONS = {
    "rv64i": rv64i, "rv64m": rv64m, "rv64a": rv64a, "rv64f": rv64f, "rv64d": rv64d,
    "rv64c": rv64c, "zicsr": zicsr, "zifencei": zifencei,
}


def illegal_sem(b, i) -> None:
    b.trap("illegal")


def _build_table() -> list[Encoding]:
    table: list[Encoding] = []
    for ext, mod in EXTENSIONS.items():
        table.extend(parse_table(mod.ENCODINGS, ext))
    names = [e.name for e in table]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"encodings defined twice: {sorted(dup)}")
    for e in table:
        e.sem = SEMANTICS.get(e.base)
        if e.sem is None:
            raise ValueError(f"{e.ext}: no semantics for {e.base} (encoding {e.name})")
    return table


TABLE: list[Encoding] = _build_table()
BY_NAME: dict[str, Encoding] = {e.name: e for e in TABLE}


def _index(length: int, key) -> dict[int, list[Encoding]]:
    out: dict[int, list[Encoding]] = {}
    for e in TABLE:
        if e.length == length:
            out.setdefault(key(e.match), []).append(e)
    for lst in out.values():   # most specific first: fixed bits decide before constraints
        lst.sort(key=lambda e: (-bin(e.mask).count("1"), len(e.forbid) == 0))
    return out


_KEY32 = 0x7F
_INDEX32 = _index(4, lambda m: m & _KEY32)
_INDEX16 = _index(2, lambda m: (m & 3) | ((m >> 11) & 0x1C))


def _key16(word: int) -> int:
    return (word & 3) | ((word >> 11) & 0x1C)


def _illegal(word: int, length: int, reason: str) -> Insn:
    i = Insn("illegal", "illegal", word, length, illegal_sem)
    i.reason = reason
    return i


def _build(e: Encoding, word: int) -> Insn | None:
    i = Insn(e.base, e.name, word, e.length, e.sem, e)
    for f in e.operands:
        v = f.extract(word)
        if f.nonzero and v == 0:
            return None
        for a in f.attrs:
            setattr(i, a, v)
    for a, v in e.fixed.items():
        setattr(i, a, v)
    for a, v in e.forbid.items():
        if getattr(i, a) == v:
            return None
    for a, v in e.require.items():
        if getattr(i, a) != v:
            return None
    return i


@lru_cache(maxsize=1 << 16)
def decode(word: int) -> Insn:
    """Decode one instruction word. The low two bits say whether it is 16 or 32 bits long;
    for a 16-bit instruction only the low 16 bits of ``word`` are used."""
    if word & 3 != 3:
        word &= 0xFFFF
        for e in _INDEX16.get(_key16(word), ()):
            if word & e.mask == e.match:
                i = _build(e, word)
                if i is not None:
                    return i
        return _illegal(word, 2, "reserved or undefined compressed encoding")
    word &= 0xFFFFFFFF
    for e in _INDEX32.get(word & _KEY32, ()):
        if word & e.mask == e.match:
            i = _build(e, word)
            if i is None:
                continue
            if any(f.name == "rm" for f in e.operands) and i.rm in (5, 6):
                return _illegal(word, 4, f"reserved rounding mode {i.rm}")
            return i
    return _illegal(word, 4, "undefined encoding")


def insn_length(first_halfword: int) -> int:
    """Length in bytes of the instruction starting with this 16-bit parcel."""
    return 4 if first_halfword & 3 == 3 else 2


def encode(name: str, **operands: int) -> int:
    """Instruction word for ``name`` with the given operands (tests, fuzzer)."""
    return BY_NAME[name].encode(**operands)
