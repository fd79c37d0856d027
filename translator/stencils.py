"""Stencils from the semantics: every instruction form of the decoder's table, lowered once
with its operands left open (``ir/stencil_emit.py``), ahead of time.

A *form* is an encoding plus the fields a stencil cannot leave open: the static rounding
mode (it selects how the host rounds) — and, where the semantics take a Python decision on
a field (``if i.imm:``), each path of those decisions is a variant whose guards say which
instructions it serves. Everything else — register numbers, immediates, the pc, the
instruction word — is a hole.

Forms the stencil lowering cannot express are served by the LLVM tier, each with the reason
(``Library.unserved``): CSR instructions (the CSR number selects the whole semantics), and
whatever the tracer finds (a read of a register after a write to a symbolic one, ...).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from dbtlab.ir.builder import MASK64
from dbtlab.ir.holes import Hole, Paths, Undecidable
from dbtlab.ir.stencil_emit import (StencilBuilder, StencilModule, Unstencilable,
                                    entry_stencil, goto_stencil)
from dbtlab.translator.decode import TABLE
from dbtlab.translator.encoding import Encoding
from dbtlab.translator.insn import Insn
from dbtlab.translator.lift import may_leave, needs_interpreter

log = logging.getLogger(__name__)

#: fields that stay holes (any others a form has are fixed by its encoding or its key)
HOLE_FIELDS = ("rd", "rs1", "rs2", "rs3", "imm", "aq", "rl", "fm", "pred", "succ")
ROUNDING_MODES = (0, 1, 2, 3, 4, 7)


@dataclass
class Variant:
    """One stencil: a path through a form's semantics."""

    symbol: str                         # its function in the library's object file
    guards: list[tuple[Hole, bool]]     # decisions on holes that select it
    direct: list[Hole]                  # targets of its direct exits, by slot index
    terminates: bool                    # it ends the block


@dataclass
class Form:
    key: tuple                          # (encoding name, rm or None)
    variants: list[Variant] = field(default_factory=list)


@dataclass
class Generated:
    """The library's source: IR text of every stencil, and what each form needs."""

    ir: str
    forms: dict[tuple, Form]
    unserved: dict[str, str]            # encoding name -> why the LLVM tier serves it
    holes: dict[str, tuple[str, Hole]]  # symbol -> (kind, expression)
    seconds: float = 0.0


def _symbolic(e: Encoding, rm: int | None) -> Insn:
    i = Insn(e.base, e.name, 0, e.length, e.sem, e)
    i.word = Hole.field("word")
    for f in e.operands:
        for a in f.attrs:
            if a in HOLE_FIELDS:
                setattr(i, a, Hole.field(a))
    for a, v in e.fixed.items():
        setattr(i, a, v)
    if rm is not None:
        i.rm = rm
    return i


def _sym(name: str) -> str:
    return "st_" + "".join(c if c.isalnum() else "_" for c in name)


def _trace(mod: StencilModule, e: Encoding, rm: int | None) -> Form:
    form = Form((e.name, rm))
    insn = _symbolic(e, rm)
    pc = Hole.field("pc")
    base = _sym(e.name) + ("" if rm is None else f"_rm{rm}")

    def one():
        b = StencilBuilder(mod, f"{base}_v{len(form.variants)}")
        b.begin_insn(0, pc, e.length, insn.word, may_leave(insn))
        if needs_interpreter(insn):
            b.interpret_one()
        else:
            insn.sem(b, insn)
            b.end_insn()
        return b, b.finish_stencil()

    for guards, (b, text) in Paths().run(one):
        mod.functions.append(text)
        form.variants.append(Variant(b.fname, guards, list(b.direct), b.terminated))
    return form


def generate(table: list[Encoding] | None = None) -> Generated:
    """Trace every form's semantics into one module of stencils (no LLVM runs here)."""
    t0 = time.perf_counter()
    mod = StencilModule()
    forms: dict[tuple, Form] = {}
    unserved: dict[str, str] = {}
    for e in table if table is not None else TABLE:
        names = {a for f in e.operands for a in f.attrs}
        if "csr" in names:
            unserved[e.name] = "CSR number selects the semantics"
            continue
        for rm in (ROUNDING_MODES if "rm" in names else (None,)):
            saved = len(mod.functions), dict(mod.holes), set(mod.decls)
            try:
                forms[(e.name, rm)] = _trace(mod, e, rm)
            except (Unstencilable, Undecidable, TypeError) as ex:
                del mod.functions[saved[0]:]
                mod.holes, mod.decls = saved[1], saved[2]
                unserved[e.name] = f"{type(ex).__name__}: {ex}"
                for k in [k for k in forms if k[0] == e.name]:
                    del forms[k]
                break
    mod.functions.append(entry_stencil(mod))
    mod.functions.append(entry_stencil(mod, hot=True))
    goto, _ = goto_stencil(mod)
    mod.functions.append(goto)
    holes = {s.symbol: (s.kind, s.expr) for s in mod.holes.values()}
    return Generated(mod.text(), forms, unserved, holes, time.perf_counter() - t0)


__all__ = ["generate", "Generated", "Form", "Variant", "MASK64"]


# ---- the library: generated once per translator version and host, then plain data ---------
def library_key() -> str:
    from dbtlab.ir.jit import host_cpu
    from dbtlab.translator.lift import TRANSLATOR_VERSION
    cpu, features = host_cpu()
    return f"{TRANSLATOR_VERSION}|{cpu}|{features}"


def build_library():
    """Generate the stencils and compile them (LLVM runs here, once)."""
    from dbtlab.ir.stencil_lib import build
    g = generate()
    meta = {"forms": {f"{k[0]}|{'' if k[1] is None else k[1]}":
                      [[v.symbol, [[h.to_json(), d] for h, d in v.guards],
                        [t.to_json() for t in v.direct], v.terminates]
                       for v in form.variants] for k, form in g.forms.items()},
            "holes": {sym: [kind, h.to_json()] for sym, (kind, h) in g.holes.items()},
            "unserved": g.unserved}
    lib = build(g.ir, library_key(), meta)
    lib.seconds += g.seconds
    return lib


def load_library(cache_dir: str | None = None):
    """The library from the persistent cache, built (and stored) if it is missing, made
    for another version or host, or damaged: a bad file is never used."""
    import os
    from pathlib import Path

    from dbtlab.ir.objcache import default_dir
    from dbtlab.ir.stencil_lib import Library, LibraryError
    key = library_key()
    folder = Path(cache_dir or os.environ.get("DBTLAB_CACHE_DIR") or default_dir())
    import hashlib
    path = folder / f"stencils-{hashlib.sha256(key.encode()).hexdigest()[:16]}.lib"
    try:
        return Library.from_bytes(path.read_bytes(), key)
    except FileNotFoundError:
        pass
    except (OSError, LibraryError) as e:
        log.warning("rebuilding the stencil library: %s", e)
    lib = build_library()
    log.info("stencil library built in %.2f s (%d stencils)", lib.seconds, len(lib.stencils))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(lib.to_bytes())
        os.replace(tmp, path)
    except OSError as e:
        log.warning("could not store the stencil library in %s: %s", folder, e)
    return lib


# ---- translating a block ---------------------------------------------------------------------
#: fields that change with where an instruction is (its block, its chain slots): holes that
#: read them are filled per block, all others once per instruction word
DYNAMIC = frozenset({"pc", "left", "n", "slot0", "slot1", "target", "id"})


class StencilTranslator:
    """Guest blocks to native code by copying and patching the library's stencils."""

    def __init__(self, lib, buf=None) -> None:
        from dbtlab.ir.stencil_patch import Patcher
        self.lib = lib
        meta = lib.meta
        holes = {}
        for sym, (kind, e) in meta["holes"].items():
            h = Hole.from_json(e)
            holes[sym] = (kind, h.compile(), frozenset(h.fields()))
        self.patcher = Patcher(lib, holes, buf)
        self.forms: dict[tuple, list] = {}
        for k, variants in meta["forms"].items():
            name, rm = k.split("|")
            key = (name, int(rm) if rm else None)
            self.forms[key] = []
            for sym, guards, direct, term in variants:
                gs = [(Hole.from_json(h), d) for h, d in guards]
                if any(h.fields() & DYNAMIC for h, _ in gs):
                    raise ValueError(f"{sym}: a guard reads where the instruction is")
                self.forms[key].append((lib.stencils[sym], [(h.compile(), d) for h, d in gs],
                                        [Hole.from_json(t).compile() for t in direct], term))
        self.unserved: dict[str, str] = dict(meta["unserved"])
        self._entry = self.patcher.prepare(lib.stencils["st__entry"], {}, DYNAMIC)
        self._entry_hot = self.patcher.prepare(lib.stencils["st__entry_hot"], {}, DYNAMIC)
        self._goto = self.patcher.prepare(lib.stencils["st__goto"], {}, DYNAMIC)
        # instruction word -> (prepared, exits, ends, fields); a decoded instruction is a
        # function of its word alone (16-bit words end in 0b00..0b10, 32-bit ones in 0b11)
        self._by_word: dict[int, tuple | None] = {}
        self.refused: str = ""       # why the last translate() returned None

    def _lookup(self, insn: Insn):
        """(prepared stencil, direct-exit target evaluators, ends the block) for a decoded
        instruction, or None; decoded instructions are shared per word, so this runs once
        per word."""
        got = self._by_word.get(insn.word, False)
        if got is not False:
            return got
        got = None
        enc = insn.enc
        if enc is not None:
            rm = insn.rm if any(f.name == "rm" for f in enc.operands) else None
            f = {a: getattr(insn, a) for a in HOLE_FIELDS}
            f["word"] = insn.word
            for st, guards, direct, term in self.forms.get((insn.mnemonic, rm), ()):
                if all(bool(g(f)) == d for g, d in guards):
                    got = (self.patcher.prepare(st, f, DYNAMIC), direct, term, f)
                    break
        self._by_word[insn.word] = got
        return got

    def translate(self, blk, new_slot, hot_id: int | None = None
                  ) -> tuple[int, list, list] | None:
        """Native code for ``blk``, or None if
        some instruction has no stencil. ``new_slot(target)`` gives a chain slot id for a
        direct exit; ``hot_id``: the block's hotness counter, if it counts towards a region.
        Returns (address, [(slot id, target pc)], [(host offset, guest pc)]); truncates
        ``blk.insns`` after the first instruction that ends the block."""
        chosen = []
        for pc, insn in blk.insns:
            got = self._lookup(insn)
            if got is None:
                self.refused = f"no stencil for {insn.mnemonic}"
                return None
            chosen.append((pc, got))
            if got[2]:
                break
        n = len(chosen)
        del blk.insns[n:]
        parts = [(self._entry, {"n": n, "pc": blk.pc}) if hot_id is None else
                 (self._entry_hot, {"n": n, "pc": blk.pc, "id": hot_id})]
        exits = []
        for k, (pc, (pre, direct, _, static)) in enumerate(chosen):
            f = dict(static, pc=pc, left=n - k)      # dynamic holes may read both
            if direct:
                for i, t in enumerate(direct):
                    target = t(f) & MASK64
                    sid = new_slot(target)
                    f[f"slot{i}"] = sid
                    exits.append((sid, target))
            parts.append((pre, f))
        if not chosen[-1][1][2]:
            target = blk.end
            sid = new_slot(target)
            exits.append((sid, target))
            parts.append((self._goto, {"target": target, "slot0": sid}))
        addr, offs = self.patcher.emit(parts)
        pcs = [(offs[0], blk.pc)] + [(offs[k + 1], pc) for k, (pc, _) in enumerate(chosen)]
        return addr, exits, pcs
