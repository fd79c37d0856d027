"""The translation cache and chaining (QEMU's contract).

* Blocks are keyed by (guest pc, instruction limit): everything the translator specialises
  on (see ``translator/block.py``).
* Each block's direct exits are *slots*: native function pointers (in the JIT environment),
  initially aimed at a stub that returns to the dispatcher, patched to the target block once
  it exists. Every patched slot is recorded on its target (a back-link), so invalidating a
  block can unchain every link into it before anything can run into stale code. Slot
  numbers of invalidated blocks are reused.
* Blocks are indexed by the guest pages they cover: a store to a page, or its unmapping,
  invalidates exactly the blocks there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from dbtlab.translator.block import GuestBlock, pages_of


@dataclass
class SlotRec:
    id: int
    source: tuple        # key of the block owning the slot
    target_pc: int
    linked: tuple | None = None   # key of the block the slot points at


@dataclass
class TB:
    """A translated block."""

    key: tuple                     # (pc, limit)
    block: GuestBlock
    fn: int                        # host address of the block function
    module: str
    slots: list[int] = field(default_factory=list)       # outgoing slot ids
    incoming: set[int] = field(default_factory=set)      # slot ids chained to us
    compile_seconds: float = 0.0   # its share of the module's compile time
    valid: bool = True
    successors: list[int] = field(default_factory=list)   # static direct targets
    tier: int = 1                  # 0: stencils, 1: LLVM, 2: a region (RegionTB)
    id: int = 0                    # block id (profiling, hotness counters)
    host_starts: list[int] = field(default_factory=list)   # stencils: insn k's code offset

    @property
    def pc(self) -> int:
        return self.key[0]

    @property
    def pages(self) -> set[int]:
        return self.block.pages

    def block_of(self, pc: int) -> GuestBlock | None:
        """The guest block holding the instruction at pc."""
        return self.block if any(p == pc for p, _ in self.block.insns) else None


@dataclass
class RegionTB(TB):
    """A second-tier region: several guest blocks compiled as one function, entered at
    ``pc``; its key is (pc, "region")."""

    blocks: list[GuestBlock] = field(default_factory=list)
    tier: int = 2

    @property
    def pages(self) -> set[int]:
        return pages_of(self.blocks)

    def block_of(self, pc: int) -> GuestBlock | None:
        return next((b for b in self.blocks if any(p == pc for p, _ in b.insns)), None)


class TranslationCache:
    """``set_slot(id, fn)`` writes a native slot; ``unlinked`` is the stub address an
    unlinked slot holds; slot ids run from 1 to ``max_slots - 1``.

    Slot ids are baked into the code that owns them, so they are part of its persistent
    cache key. Second-tier regions take theirs from a pool of their own (the top quarter):
    when a region is formed or dropped then never shifts the ids — and so the cache keys —
    of the first-tier blocks translated after it."""

    def __init__(self, set_slot: Callable[[int, int], None], unlinked: int,
                 max_slots: int) -> None:
        self.blocks: dict[tuple, TB] = {}
        self.by_page: dict[int, set[tuple]] = {}
        self.slots: dict[int, SlotRec] = {}
        self._set_slot = set_slot
        self.unlinked = unlinked
        self.max_slots = max_slots
        self._free: list[int] = []
        self._next_slot = 1
        self.region_first = max_slots - max_slots // 4
        self._rfree: list[int] = []
        self._next_rslot = self.region_first
        self.links = 0          # chain links made (cumulative)
        self.unlinks = 0
        self.invalidated = 0
        #: called with ("link" | "unlink", slot id, source key, target key) (profiling)
        self.listener: Callable[[str, int, tuple, tuple | None], None] | None = None

    # ---- slot numbers ----------------------------------------------------------------
    def new_slot_id(self) -> int:
        """A free slot number (its native slot set to the unlinked stub)."""
        if self._free:
            sid = self._free.pop()
        else:
            if self._next_slot >= self.region_first:
                raise OverflowError("out of chain slots")
            sid = self._next_slot
            self._next_slot += 1
        self._set_slot(sid, self.unlinked)
        return sid

    def new_region_slot_id(self) -> int:
        """A free slot number from the regions' pool."""
        if self._rfree:
            sid = self._rfree.pop()
        else:
            if self._next_rslot >= self.max_slots:
                raise OverflowError("out of region chain slots")
            sid = self._next_rslot
            self._next_rslot += 1
        self._set_slot(sid, self.unlinked)
        return sid

    def release_slot_id(self, sid: int) -> None:
        """Give back a first-tier slot number that no block took (its code was not made)."""
        self._set_slot(sid, self.unlinked)
        self._free.append(sid)

    def free_slots(self) -> int:
        return len(self._free) + self.region_first - self._next_slot

    def free_region_slots(self) -> int:
        return len(self._rfree) + self.max_slots - self._next_rslot

    def __len__(self) -> int:
        return len(self.blocks)

    def get(self, pc: int, limit: int | None = None) -> TB | None:
        return self.blocks.get((pc, limit))

    def best(self, pc: int) -> TB | None:
        """What code entering at pc should run: its region if there is one, else its
        first-tier block."""
        return self.blocks.get((pc, "region")) or self.blocks.get((pc, None))

    def regions(self) -> list[RegionTB]:
        return [tb for key, tb in self.blocks.items() if key[1] == "region"]

    def insert(self, tb: TB) -> None:
        self.blocks[tb.key] = tb
        for pn in tb.pages:
            self.by_page.setdefault(pn, set()).add(tb.key)

    def add_slot(self, rec: SlotRec) -> None:
        self.slots[rec.id] = rec
        self.blocks[rec.source].slots.append(rec.id)

    # ---- chaining --------------------------------------------------------------------
    def link(self, slot_id: int, target: TB) -> None:
        """Point a slot at a block (a direct, native transition from now on)."""
        rec = self.slots[slot_id]
        if rec.linked == target.key:
            return
        if rec.linked is not None:
            self.unlink(slot_id)
        self._set_slot(slot_id, target.fn)
        rec.linked = target.key
        target.incoming.add(slot_id)
        self.links += 1
        if self.listener is not None:
            self.listener("link", slot_id, rec.source, target.key)

    def unlink(self, slot_id: int) -> None:
        rec = self.slots[slot_id]
        if rec.linked is None:
            return
        self._set_slot(slot_id, self.unlinked)
        tgt = self.blocks.get(rec.linked)
        if tgt is not None:
            tgt.incoming.discard(slot_id)
        if self.listener is not None:
            self.listener("unlink", slot_id, rec.source, rec.linked)
        rec.linked = None
        self.unlinks += 1

    # ---- invalidation ----------------------------------------------------------------
    def invalidate_pages(self, pages) -> list[TB]:
        """Remove every block touching the pages; unchain all links into and out of them."""
        gone: list[TB] = []
        for pn in pages:
            for key in self.by_page.pop(pn, ()):
                tb = self.blocks.pop(key, None)
                if tb is None:
                    continue
                gone.append(tb)
        for tb in gone:               # first unchain everything into the removed blocks
            tb.valid = False
            for sid in list(tb.incoming):
                if sid in self.slots:
                    self.unlink(sid)
        for tb in gone:               # then their own exits, whose numbers are reused
            for sid in tb.slots:
                if sid in self.slots:
                    self.unlink(sid)
                    del self.slots[sid]
                    (self._rfree if sid >= self.region_first else self._free).append(sid)
            for pn in tb.pages:
                keys = self.by_page.get(pn)
                if keys is not None:
                    keys.discard(tb.key)
                    if not keys:
                        del self.by_page[pn]
        self.invalidated += len(gone)
        return gone

    def clear(self, unlinked: int) -> None:
        """Forget everything (the JIT engine is being flushed: no unlinking needed);
        ``unlinked`` is the new engine's stub."""
        self.blocks.clear()
        self.by_page.clear()
        self.slots.clear()
        self._free.clear()
        self._next_slot = 1
        self._rfree.clear()
        self._next_rslot = self.region_first
        self.unlinked = unlinked
