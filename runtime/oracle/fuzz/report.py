"""Reproducer files and human-readable reports of the fuzzer.

A reproducer is a JSON document (``"format": "dbtlab-fuzz-reproducer"``, ``"version": 1``)
with the instruction words as laid out at ``code_base`` (and the items they came from, so
the case can be minimised again), the complete initial state, the engines, the observed
difference (the first differing instruction with every differing value, and the final
differences), and the known deviation it meets, if any. ``dbtlab fuzz --replay FILE`` and
:func:`dbtlab.runtime.oracle.fuzz.replay` rerun it.
"""

from __future__ import annotations

import json
import os
import re

from dbtlab.runtime.oracle.fuzz.case import (REPRO_VERSION, Case, case_from_json, case_to_json,
                                            disasm_word, disassemble)

FORMAT = "dbtlab-fuzz-reproducer"


def divergence_json(pair: tuple[str, str], verdict, known: bool) -> dict:
    st = verdict.step
    d = {"class": verdict.cls, "engines": list(pair), "known_deviations": known,
         "deviation": None}
    if st is not None:
        d.update({
            "executed_before": st.executed, "pc": f"{st.pc:#x}",
            "instruction": {"word": f"{st.insn.word:#x}", "mnemonic": st.insn.mnemonic,
                            "text": disasm_word(st.insn.word, st.pc)} if st.insn else None,
            "differences": [x.to_json() for x in st.diffs],
            "deviation": st.deviation, "rule": st.rule or None})
    d["final_differences"] = [x.to_json() for x in verdict.final_diffs]
    if verdict.crash:
        d["crash"] = verdict.crash
    return d


def reproducer(case: Case, pair: tuple[str, str], verdict, known: bool,
               original: Case | None = None, base: int | None = None) -> dict:
    doc = {"format": FORMAT, "version": REPRO_VERSION, "engines": list(pair)}
    doc.update(case_to_json(case) if base is None else case_to_json(case, base))
    doc["difference"] = divergence_json(pair, verdict, known)
    if original is not None:
        doc["original_instructions"] = original.n_insns()
    return doc


def write_reproducer(doc: dict, out_dir: str, name: str) -> str:
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + ".json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    return path


def read_reproducer(path: str) -> tuple[dict, Case]:
    with open(path) as f:
        doc = json.load(f)
    if doc.get("format") != FORMAT:
        raise ValueError(f"{path}: not a dbtlab fuzz reproducer")
    if int(doc.get("version", 0)) > REPRO_VERSION:
        raise ValueError(f"{path}: reproducer version {doc['version']} is newer than "
                         f"this dbtlab ({REPRO_VERSION})")
    return doc, case_from_json(doc)


def verdict_text(pair: tuple[str, str], verdict, case: Case | None = None,
                 base: int | None = None) -> str:
    a, b = pair
    if verdict.ok:
        s = f"{a} and {b} agree"
        if verdict.excused:
            s += " (after excusing " + ", ".join(
                f"{d} at {pc:#x} {m}" for d, pc, m in verdict.excused) + ")"
        return s
    st = verdict.step
    out = [f"DIVERGENCE {a} vs {b}: class {verdict.cls}"]
    if verdict.crash:
        out.append(f"  {verdict.crash}")
    if st is not None:
        out.append(f"  first differing instruction (after {st.executed} instructions): "
                   f"{st.pc:#x}: {disasm_word(st.insn.word, st.pc) if st.insn else '?'}")
        if st.deviation:
            out.append(f"  known oracle deviation {st.deviation} (not excused): {st.rule}")
        out += ["    " + d.show(a, b) for d in st.diffs]
    if verdict.final_diffs:
        out.append("  at the end of the case:")
        out += ["    " + d.show(a, b) for d in verdict.final_diffs[:12]]
    if case is not None and base is not None:
        out.append("  program:")
        out += ["    " + line for line in disassemble(case.layout(base)[0], base)]
    return "\n".join(out)
