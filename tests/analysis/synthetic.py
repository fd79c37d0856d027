"""Hand-made profile documents in format version 1, for tests that need exact shapes."""

from __future__ import annotations


def make_profile(blocks, edges, functions=None, **run) -> dict:
    """blocks: (id, pc, insns, count, function, offset); edges: (src, dst, kind, count)."""
    recs = [{"id": i, "pc": pc, "end": pc + 4 * n, "insns": n, "guest_bytes": 4 * n,
             "host_bytes": 64 * n, "count": c, "tier": 1, "module": "m1", "compile_us": 100.0,
             "translated_at": 0.0, "invalidated_at": None, "limit": None, "function": fn,
             "offset": off} for i, pc, n, c, fn, off in blocks]
    pcs = {r["id"]: r["pc"] for r in recs}
    return {"format": "dbtlab-profile", "version": 1,
            "program": {"path": "/synthetic/prog", "sha256": None, "argv": ["prog"],
                        "functions": functions or {}},
            "run": {"accel": "llvm", "instret": sum(r["count"] * r["insns"] for r in recs),
                    "exits": {}, "translation": {}, **run},
            "blocks": recs,
            "edges": [{"src": s, "dst": d, "dst_pc": pcs[d], "kind": k, "count": c}
                      for s, d, k, c in edges],
            "modules": [{"name": "m1", "blocks": len(recs), "insns": 0, "emit_us": 50.0,
                         "compile_us": 150.0, "at": 0.001}],
            "chain_events": []}


def nested_loops_with_calls() -> dict:
    """f: an outer loop (B..F) around an inner loop (C, D) whose body calls g from E (return
    site F); h: a loop (X, Y) that also calls g. Blocks are 2 instructions (8 bytes), so a
    call block's return site is at pc + 8."""
    f, g, h = "f", "g", "h"
    blocks = [(1, 0x1000, 2, 1, f, 0),        # A: entry
              (2, 0x1010, 2, 10, f, 0x10),    # B: outer header
              (3, 0x1020, 2, 100, f, 0x20),   # C: inner header
              (4, 0x1030, 2, 100, f, 0x30),   # D
              (5, 0x1040, 2, 10, f, 0x40),    # E: calls g, returns to F at 0x1048
              (6, 0x1048, 2, 10, f, 0x48),    # F
              (7, 0x1060, 2, 1, f, 0x60),     # H: after the loop
              (8, 0x2000, 2, 20, g, 0),       # G: g's only block
              (9, 0x3000, 2, 10, h, 0),       # X: h's loop header, calls g
              (10, 0x3008, 2, 10, h, 0x8)]    # Y: return site in h
    edges = [(1, 2, "chained", 1), (2, 3, "chained", 10), (3, 4, "chained", 100),
             (4, 3, "chained", 90), (4, 5, "chained", 10), (5, 8, "chained", 10),
             (8, 6, "indirect", 10), (6, 2, "chained", 9), (6, 7, "chained", 1),
             (9, 8, "chained", 10), (8, 10, "indirect", 10), (10, 9, "chained", 9)]
    return make_profile(blocks, edges, {f: [0x1000, 0x100], g: [0x2000, 0x10],
                                        h: [0x3000, 0x20]})


def diamond_loop() -> dict:
    """One loop B -> (C 90% | D 10%) -> E -> B, left once to X."""
    blocks = [(1, 0x1000, 3, 100, "f", 0), (2, 0x1010, 4, 90, "f", 0x10),
              (3, 0x1020, 4, 10, "f", 0x20), (4, 0x1030, 2, 100, "f", 0x30),
              (5, 0x1040, 1, 1, "f", 0x40)]
    edges = [(1, 2, "chained", 90), (1, 3, "chained", 10), (2, 4, "chained", 90),
             (3, 4, "chained", 10), (4, 1, "chained", 99), (4, 5, "chained", 1)]
    return make_profile(blocks, edges, {"f": [0x1000, 0x50]})
