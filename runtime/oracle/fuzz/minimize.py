"""Delta debugging of a divergent case, keeping its divergence class.

Three phases, each a series of trials that keep a change only if the case still diverges
in the same class (same known deviation, or same first differing instruction and kinds of
difference):

1. drop items (ddmin over the program; control transfers are retargeted), then single
   instructions inside the groups that are left;
2. simplify operands of what is left (immediates to 0, rounding mode to RNE or dynamic,
   ordering bits to 0);
3. simplify the initial state: x and f registers to zero (ddmin over which must keep their
   value), then x registers to small values, fcsr to 0, the reservation dropped, the
   scratch window to zero (ddmin over 64-byte chunks, then 8-byte words).
"""

from __future__ import annotations

import logging
from typing import Callable

from dbtlab.runtime.oracle.fuzz.case import Case, Item
from dbtlab.translator.decode import decode

log = logging.getLogger(__name__)


def ddmin(n: int, test: Callable[[set[int]], bool], max_tests: int = 400) -> set[int]:
    """A small subset of range(n) to *keep* such that ``test(keep)`` holds (``test`` of
    the full set is assumed to hold). Zeller's ddmin on the complement, bounded."""
    keep = list(range(n))
    if n == 0:
        return set()
    if test(set()):
        return set()
    tests = 1
    gran = 2
    while len(keep) >= 2 and tests < max_tests:
        chunk = max(1, len(keep) // gran)
        parts = [keep[i:i + chunk] for i in range(0, len(keep), chunk)]
        reduced = False
        for p in parts:                               # try removing one part
            rest = [k for k in keep if k not in set(p)]
            tests += 1
            if test(set(rest)):
                keep = rest
                gran = max(gran - 1, 2)
                reduced = True
                break
            if tests >= max_tests:
                break
        if not reduced:
            if gran >= len(keep):
                break
            gran = min(len(keep), gran * 2)
    return set(keep)


def _simpler_words(word: int, patch: bool) -> list[int]:
    """Simpler variants of an instruction word (same encoding)."""
    insn = decode(word)
    if insn.is_illegal or insn.enc is None:
        return []
    ops = insn.operands()
    out = []
    trials = []
    if not patch and ops.get("imm", 0) != 0:
        trials.append(("imm", 0))
    if ops.get("rm") not in (None, 0):
        trials += [("rm", 0), ("rm", 7)]
    for k in ("aq", "rl", "fm", "pred", "succ"):
        if ops.get(k):
            trials.append((k, 0))
    for k, v in trials:
        o = dict(ops)
        o[k] = v
        try:
            w = insn.enc.encode(**o)
        except ValueError:
            continue
        if w != word and not decode(w).is_illegal:
            out.append(w)
    return out


def minimise(c: Case, same: Callable[[Case], bool], max_tests: int = 1500) -> Case:
    """The smallest case found for which ``same(case)`` (still diverges in the same
    class) holds; ``same(c)`` is assumed true."""
    budget = [max_tests]

    def t(case: Case) -> bool:
        if budget[0] <= 0:
            return False
        budget[0] -= 1
        try:
            return same(case)
        except Exception as e:            # noqa: BLE001 - a broken variant is not the bug
            log.debug("minimise: variant raised %s", e)
            return False

    # 1. items
    n = len(c.items)
    keep = ddmin(n, lambda k: t(c.without(set(range(n)) - k)))
    c = c.without(set(range(n)) - keep)
    # single drops ddmin may have missed
    k = 0
    while k < len(c.items):
        d = c.without({k})
        if t(d):
            c = d
        else:
            k += 1
    # ... and single instructions inside the groups that are left
    for k in range(len(c.items)):
        w = 0
        while len(c.items[k].words) > 1 and w < len(c.items[k].words):
            it = c.items[k]
            if it.target is not None and w == it.patch:
                w += 1
                continue
            patch = it.patch - (1 if it.target is not None and w < it.patch else 0)
            items = list(c.items)
            items[k] = Item(it.words[:w] + it.words[w + 1:], it.cls, it.target, patch)
            d = c.copy(items=items)
            if t(d):
                c = d
            else:
                w += 1
    # 2. operands
    for k, it in enumerate(c.items):
        for wi, w in enumerate(it.words):
            for alt in _simpler_words(w, it.target is not None and wi == it.patch):
                items = list(c.items)
                words = list(it.words)
                words[wi] = alt
                items[k] = Item(words, it.cls, it.target, it.patch)
                d = c.copy(items=items)
                if t(d):
                    c, it = d, items[k]
                    break
    # 3. state
    nz = [i for i in range(1, 32) if c.x[i]]
    keep = ddmin(len(nz), lambda k: t(c.copy(x=[0] + [c.x[i] if i not in nz or
                                                     nz.index(i) in k else 0
                                                     for i in range(1, 32)])))
    c = c.copy(x=[0] + [c.x[i] if i not in nz or nz.index(i) in keep else 0
                        for i in range(1, 32)])
    for i in range(1, 32):                 # what must stay nonzero: try 1, -1
        if c.x[i] not in (0, 1):
            for v in (1, (1 << 64) - 1):
                x = list(c.x)
                x[i] = v
                d = c.copy(x=x)
                if t(d):
                    c = d
                    break
    nz = [i for i in range(32) if c.f[i]]
    keep = ddmin(len(nz), lambda k: t(c.copy(f=[c.f[i] if i not in nz or nz.index(i) in k
                                                else 0 for i in range(32)])))
    c = c.copy(f=[c.f[i] if i not in nz or nz.index(i) in keep else 0 for i in range(32)])
    for alt in ({"fcsr": 0}, {"fcsr": c.fcsr & 0xE0}, {"fcsr": c.fcsr & 0x1F},
                {"res": (0, 0, 0)}):
        if all(getattr(c, k) == v for k, v in alt.items()):
            continue
        d = c.copy(**alt)
        if t(d):
            c = d
    c = _zero_memory(c, t)
    return c


def _zero_memory(c: Case, t: Callable[[Case], bool]) -> Case:
    mem = bytes(c.mem)
    DATA_SIZE = len(mem)
    if not any(mem):
        return c
    d = c.copy(mem=bytes(DATA_SIZE))
    if t(d):
        return d
    for size in (64, 8):
        chunks = [o for o in range(0, DATA_SIZE, size) if any(mem[o:o + size])]

        def build(keep: set[int], chunks=chunks, size=size) -> bytes:
            m = bytearray(DATA_SIZE)
            for k in keep:
                o = chunks[k]
                m[o:o + size] = mem[o:o + size]
            return bytes(m)
        keep = ddmin(len(chunks), lambda k: t(c.copy(mem=build(k))))
        mem = build(keep)
        c = c.copy(mem=mem)
    return c
