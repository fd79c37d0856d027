"""Execution profiles of the LLVM accelerator, and their on-disk format.

With profiling on (``dbtlab run --profile FILE``, ``RunConfig(profile=True)``), translated
code carries counters — and only then: code translated without profiling has none:

* every block counts its executions;
* every direct exit counts its transitions (one counter per chain slot);
* every dynamic exit (indirect jump, return to the dispatcher, exit to Python) leaves its
  block id behind, and the next block to run records the edge (prev, next) in a native
  hash table.

Python adds what it sees: translation events (block pc, guest instructions and bytes, host
code bytes, compile time, module/batch, tier), chain link and unlink events, exits to
Python by reason. ``ProfileRecorder.document()`` returns the whole thing in the format
below, written as JSON (optionally gzip-compressed when the file name ends in ``.gz``).

Format ``dbtlab-profile`` version 1 (see docs/profile-format.md)::

    {"format": "dbtlab-profile", "version": 1,
     "program": {"path", "sha256", "argv", "functions": {name: [start, size]}},
     "run": {"accel", "instret", "wall", "status", "signal", "exits": {reason: n},
             "translation": {...accelerator statistics...}},
     "blocks": [{"id", "pc", "end", "insns", "guest_bytes", "host_bytes", "count",
                 "tier", "module", "compile_us", "translated_at", "invalidated_at",
                 "limit", "function", "offset"}],
     "edges": [{"src", "dst", "dst_pc", "kind", "count"}],   # kind: chained, indirect,
                                                          # dispatch, exit
     "modules": [{"name", "blocks", "insns", "emit_us", "compile_us", "at"}],
     "chain_events": [{"at", "event", "slot", "src", "dst"}],     # link / unlink
     "regions": [{"id", "entry", "blocks", "insns", "installed_at"}]}  # second tier

Times (``at``, ``translated_at``...) are seconds since the run started; ids are unique
within one profile.
"""

from __future__ import annotations

import ctypes
import gzip
import hashlib
import json
import time
from typing import TYPE_CHECKING

from dbtlab.ir.env import (MAX_SLOTS, PROF_CHAINED, PROF_DISPATCH, PROF_EDGE_BITS, PROF_EXIT, PROF_INDIRECT,
                           PROF_KIND_SHIFT, PROF_MAX_BLOCKS)

if TYPE_CHECKING:
    from dbtlab.translator.tcache import TB

FORMAT = "dbtlab-profile"
VERSION = 1
# a region's branches between its blocks are direct transitions: "chained", as slots are
KIND_NAMES = {PROF_INDIRECT: "indirect", PROF_DISPATCH: "dispatch", PROF_EXIT: "exit",
              PROF_CHAINED: "chained"}


class ProfileRecorder:
    """Owns the native counters and the event log of one profiled run."""

    def __init__(self, machine) -> None:
        self.machine = machine
        self.t0 = time.perf_counter()
        self.counts = (ctypes.c_uint64 * PROF_MAX_BLOCKS)()
        self.slot_counts = (ctypes.c_uint64 * MAX_SLOTS)()
        self.edges = (ctypes.c_uint64 * (2 << PROF_EDGE_BITS))()
        self._next_id = 1
        self.blocks: dict[int, dict] = {}        # id -> record
        self.by_key: dict[tuple, int] = {}       # live (pc, limit) -> id
        self.slot_edges: dict[tuple, int] = {}   # (src id, target pc) -> transitions
        self.slot_owner: dict[int, tuple] = {}   # live slot id -> (src id, target pc)
        self.dyn_edges: dict[tuple, int] = {}    # (src, dst, kind) -> count (harvested)
        self.modules: list[dict] = []
        self.chain_events: list[dict] = []
        self.regions: list[dict] = []

    def now(self) -> float:
        return time.perf_counter() - self.t0

    # ---- wiring into the environment --------------------------------------------------
    def install(self, state) -> None:
        state.prof_counts = ctypes.addressof(self.counts)
        state.prof_slots = ctypes.addressof(self.slot_counts)
        state.prof_edges = ctypes.addressof(self.edges)

    def new_block_id(self) -> int:
        if self._next_id >= PROF_MAX_BLOCKS:
            raise OverflowError("too many blocks for the profile counters")
        bid = self._next_id
        self._next_id += 1
        return bid

    # ---- events -------------------------------------------------------------------------
    def on_module(self, name: str, codes, tbs, emit_s: float, compile_s: float,
                  addrs: list[int]) -> None:
        at = self.now()
        starts = sorted(addrs[c.table_index] for c in codes)
        prog = self.machine.program
        for c, tb in zip(codes, tbs):
            a = addrs[c.table_index]
            nxt = next((x for x in starts if x > a), None)
            sym = prog.symbol_at(c.block.pc)
            self.blocks[c.id] = {
                "id": c.id, "pc": c.block.pc, "end": c.block.end,
                "insns": len(c.block.insns), "guest_bytes": c.block.size,
                "host_bytes": (nxt - a) if nxt else None, "count": 0, "tier": 1,
                "module": name, "compile_us": 1e6 * (emit_s + compile_s) / len(codes),
                "translated_at": at, "invalidated_at": None, "limit": c.block.limit,
                "function": sym[0] if sym else None, "offset": sym[1] if sym else None,
                "region": None}
            self.by_key[tb.key] = c.id
            for sl in c.slots:
                self.slot_owner[sl.id] = (sl.src_id or c.id, sl.target)
        self.modules.append({"name": name, "blocks": len(codes),
                             "insns": sum(len(c.block.insns) for c in codes),
                             "emit_us": 1e6 * emit_s, "compile_us": 1e6 * compile_s, "at": at})

    def on_chain_event(self, event: str, slot_id: int, src_key: tuple,
                       dst_key: tuple | None) -> None:
        """A chain slot was linked or unlinked (translation cache listener)."""
        self.chain_events.append({"at": self.now(), "event": event, "slot": slot_id,
                                  "src": self.by_key.get(src_key),
                                  "dst": self.by_key.get(dst_key) if dst_key else None})

    def on_region(self, rtb, tbs, code) -> None:
        """A second-tier region was installed over these first-tier blocks."""
        rid = len(self.regions) + 1
        for tb in tbs:
            if tb.id in self.blocks:
                self.blocks[tb.id]["region"] = rid
        for sl in code.slots:
            self.slot_owner[sl.id] = (sl.src_id, sl.target)
        self.by_key[rtb.key] = tbs[0].id if tbs else None
        self.regions.append({"id": rid, "entry": rtb.pc, "blocks": [tb.id for tb in tbs],
                             "insns": code.guest_insns, "installed_at": self.now()})

    def on_slots_freed(self, slot_ids) -> None:
        """Slot numbers are reused: bank their counts first."""
        for sid in slot_ids:
            owner = self.slot_owner.pop(sid, None)
            n = self.slot_counts[sid]
            self.slot_counts[sid] = 0
            if owner is not None and n:
                self.slot_edges[owner] = self.slot_edges.get(owner, 0) + n

    def on_invalidate(self, tbs) -> None:
        at = self.now()
        for tb in tbs:
            bid = self.by_key.pop(tb.key, None)
            if bid is not None:
                self.blocks[bid]["invalidated_at"] = at

    def harvest(self) -> None:
        """Bank every native counter (before a flush, or at the end)."""
        for bid, rec in self.blocks.items():
            rec["count"] += self.counts[bid]
            self.counts[bid] = 0
        self.on_slots_freed(list(self.slot_owner))
        mask = (1 << PROF_KIND_SHIFT) - 1
        for i in range(1 << PROF_EDGE_BITS):
            key = self.edges[2 * i]
            if key:
                prev, cur = key & 0xFFFFFFFF, key >> 32
                k = (prev & mask, cur, (prev >> PROF_KIND_SHIFT) & 0xFF)
                self.dyn_edges[k] = self.dyn_edges.get(k, 0) + self.edges[2 * i + 1]
                self.edges[2 * i] = self.edges[2 * i + 1] = 0

    def on_flush(self, live_slots) -> None:
        self.harvest()
        self.by_key.clear()

    # ---- the document -------------------------------------------------------------------
    def document(self, result=None) -> dict:
        self.harvest()
        prog = self.machine.program
        pc_to_id = {}
        for rec in self.blocks.values():       # the latest full translation of each pc
            if rec["limit"] is None:
                pc_to_id[rec["pc"]] = rec["id"]
        edges = [{"src": src, "dst": pc_to_id.get(pc), "dst_pc": pc, "kind": "chained",
                  "count": n} for (src, pc), n in sorted(self.slot_edges.items())]
        edges += [{"src": src, "dst": dst, "dst_pc": self.blocks[dst]["pc"]
                   if dst in self.blocks else None, "kind": KIND_NAMES.get(kind, str(kind)),
                   "count": n} for (src, dst, kind), n in sorted(self.dyn_edges.items())]
        functions = {}
        for addr, name in sorted(getattr(prog, "symbols", {}).items()):
            functions.setdefault(name, [addr, getattr(prog, "_sym_sizes", {}).get(addr, 0)])
        stats = self.machine.stats()
        run = {"accel": stats.get("accel"), "instret": self.machine.instret,
               "exits": stats.get("exits", {}),
               "translation": {k: v for k, v in stats.items() if k not in ("exits",)}}
        if result is not None:
            run.update(wall=result.wall, status=result.status, signal=result.signal,
                       stopped=result.stopped)
        return {"format": FORMAT, "version": VERSION,
                "program": {"path": prog.path, "sha256": _sha256(prog.path),
                            "argv": list(getattr(self.machine.start, "argv", [])),
                            "functions": functions},
                "run": run, "blocks": sorted(self.blocks.values(), key=lambda r: r["id"]),
                "edges": edges, "modules": self.modules, "chain_events": self.chain_events,
                "regions": self.regions}


def _sha256(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def write_profile(doc: dict, path: str) -> None:
    data = json.dumps(doc, separators=(",", ":")).encode()
    if path.endswith(".gz"):
        data = gzip.compress(data)
    with open(path, "wb") as f:
        f.write(data)
