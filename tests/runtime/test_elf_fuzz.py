"""Fuzz target for the ELF headers: the shipped binaries with their ELF header and program
headers mutated field by field (offsets, counts, sizes, addresses, alignment, flags, types,
overlapping segments, huge values, truncated files), each loaded by the real loader
(``load_elf`` into a fresh ``GuestMemory``; a ``Machine`` for some of those that load).
Each either loads or raises a ``DbtError`` with a one-line message — never another
exception, never a hang. A fixed seed; a few seconds in the default suite, 20 times more
cases under ``-m slow``.

Mutations that make the loader map more than ``HUGE_BYTES`` of guest memory are loaded in a
child with a data-size limit and a time limit instead (should huge mappings ever cost host
memory again, they must not take the test process with them).
"""

from __future__ import annotations

import gc
import json
import random
import resource
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dbtlab.ir.abi import ADDR_LIMIT
from dbtlab.runtime.config import RunConfig
from dbtlab.runtime.errors import DbtError
from dbtlab.runtime.linux.loader import StartConfig, load_elf
from dbtlab.runtime.linux.memory import GuestMemory
from dbtlab.runtime.machine import Machine
from tests.conftest import GUESTS, ROOT

FIXTURES = ROOT / "tests" / "fixtures"
SEED = 20261207
CASES = 400                       # default suite; -m slow runs SLOW_FACTOR times as many
SLOW_FACTOR = 20
HUGE_BYTES = 64 << 20             # more guest memory than this is loaded in a child only

EHDR = {"e_type": (16, "H"), "e_machine": (18, "H"), "e_entry": (24, "Q"),
        "e_phoff": (32, "Q"), "e_shoff": (40, "Q"), "e_flags": (48, "I"),
        "e_phentsize": (54, "H"), "e_phnum": (56, "H"), "e_shentsize": (58, "H"),
        "e_shnum": (60, "H"), "e_shstrndx": (62, "H")}
PHDR = {"p_type": (0, "I"), "p_flags": (4, "I"), "p_offset": (8, "Q"), "p_vaddr": (16, "Q"),
        "p_filesz": (32, "Q"), "p_memsz": (40, "Q"), "p_align": (48, "Q")}
PT_TYPES = [0, 1, 2, 3, 4, 6, 7, 0x6474E550, 0x6474E551, 0x6474E552, 0x70000003]


REFUSED = ("rv32_static", "rv64_dynamic")      # shipped to be refused


def binaries() -> list[Path]:
    """The shipped RISC-V binaries the loader accepts, and some it refuses."""
    names = ["rv64_static", "rv64_static_pie", "rv64_static_gnu", "nanbox", *REFUSED]
    out = [FIXTURES / n for n in names if (FIXTURES / n).exists()]
    out += [p for p in (GUESTS / "bin/hello", GUESTS / "bin/exit3") if p.exists()]
    return out


# ---- field-aware mutation --------------------------------------------------------------

def _get(d: bytearray, off: int, fmt: str) -> int | None:
    if off < 0 or off + struct.calcsize("<" + fmt) > len(d):
        return None
    return struct.unpack_from("<" + fmt, d, off)[0]


def _put(d: bytearray, off: int, fmt: str, v: int) -> None:
    size = struct.calcsize("<" + fmt)
    if 0 <= off and off + size <= len(d):
        struct.pack_into("<" + fmt, d, off, v & ((1 << 8 * size) - 1))


def _phdrs(d: bytearray) -> list[int]:
    """File offsets of the program headers the header describes (those inside the file)."""
    phoff, phnum = _get(d, 32, "Q"), _get(d, 56, "H")
    if phoff is None or phnum is None:
        return []
    return [phoff + 56 * i for i in range(min(phnum, 64)) if phoff + 56 * (i + 1) <= len(d)]


def _loads(d: bytearray) -> list[int]:
    return [o for o in _phdrs(d) if _get(d, o, "I") == 1]


def _values(rng: random.Random, d: bytearray, field: str, bits: int) -> int:
    """An interesting value for a field."""
    top = (1 << bits) - 1
    n = max(len(d), 1)
    common = [0, 1, top, top - 1, 1 << (bits - 1), rng.getrandbits(bits),
              rng.randrange(0, 1 << min(bits, 16))]
    specific = {
        "e_phoff": [n, n - 1, n - 56, n + 1, 63, 64 + rng.randrange(8), rng.randrange(n)],
        "p_offset": [n, n - 1, n + 0x1000, rng.randrange(n), 0x1000, 0xFFF],
        "e_phnum": [2, 3, 16, 0xFFFF, 1000],
        "e_phentsize": [0, 32, 55, 57, 64, 56 * 2],
        "e_shentsize": [0, 40, 63, 65],
        "p_vaddr": [ADDR_LIMIT - 0x1000, ADDR_LIMIT, ADDR_LIMIT - 1, 0x1000, 0x10000 + 1,
                    (1 << 64) - 0x1000, (1 << 63), 0x3FFFFFF000 - 0x8000, 0x10000],
        "p_filesz": [n, n + 1, 0x1000, 1 << 32, (1 << 64) - 1],
        "p_memsz": [0x1000, 0x100000, 1 << 30, 1 << 36, ADDR_LIMIT, (1 << 64) - 0x1000,
                    0x7FFFFFFFFFFFF000],
        "p_align": [0, 1, 3, 0x1000, 0x1001, 0x200000, 1 << 63],
        "p_flags": list(range(8)) + [0xFFFFFFFF],
        "p_type": PT_TYPES,
        "e_type": [0, 1, 2, 3, 4, 0xFE00, 0xFFFF],
        "e_entry": [0, ADDR_LIMIT, 0x10000 + 2],
    }.get(field, [])
    return rng.choice(common + specific * 3)


def mutate(rng: random.Random, data: bytes) -> tuple[bytes, list[str]]:
    """1-3 field-aware mutations; returns the bytes and what was done."""
    d = bytearray(data)
    done = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        kind = rng.choices(["ehdr", "phdr", "overlap", "truncate", "flip", "dup"],
                           [4, 8, 2, 1, 1, 1])[0]
        if kind == "ehdr":
            name = rng.choice(list(EHDR))
            off, fmt = EHDR[name]
            v = _values(rng, d, name, 8 * struct.calcsize(fmt))
            _put(d, off, fmt, v)
            done.append(f"{name}={v:#x}")
        elif kind == "phdr" and _phdrs(d):
            i = rng.randrange(len(_phdrs(d)))
            name = rng.choice(list(PHDR))
            off, fmt = PHDR[name]
            v = _values(rng, d, name, 8 * struct.calcsize(fmt))
            _put(d, _phdrs(d)[i] + off, fmt, v)
            done.append(f"phdr[{i}].{name}={v:#x}")
        elif kind == "overlap" and len(_loads(d)) >= 1:
            loads = _loads(d)
            a = rng.choice(loads)
            b = rng.choice(_phdrs(d))
            _put(d, b, "I", 1)
            va = _get(d, a + 16, "Q")
            shift = rng.choice((0, 0x800, 0x1000, -0x1000, 1))
            _put(d, b + 16, "Q", va + shift)
            if rng.random() < 0.5:
                _put(d, b + 8, "Q", _get(d, a + 8, "Q"))
            done.append(f"overlap phdr@{b:#x} with phdr@{a:#x} (+{shift:#x})")
        elif kind == "truncate" and d:
            cut = rng.choice([rng.randrange(0, 64), rng.randrange(0, min(len(d), 64 + 56 * 8)),
                              rng.randrange(0, len(d)), len(d) - 1])
            del d[cut:]
            done.append(f"truncate to {cut}")
        elif kind == "flip":
            end = min(len(d), 64 + 56 * 12)
            for _ in range(rng.randint(1, 8)):
                if end:
                    d[rng.randrange(end)] ^= 1 << rng.randrange(8)
            done.append("flip header bits")
        elif kind == "dup" and _phdrs(d):
            phnum = _get(d, 56, "H")
            _put(d, 56, "H", phnum + rng.choice((1, 2)))
            done.append(f"e_phnum+ from {phnum}")
    return bytes(d), done


def mapped_bytes(d: bytes, cfg: StartConfig) -> int:
    """How much guest memory the loader would map for these headers, at most (PT_LOAD
    segments inside the address space, biased as for a PIE)."""
    db = bytearray(d)
    loads = [(_get(db, o + 16, "Q"), _get(db, o + 40, "Q")) for o in _loads(db)]
    loads = [(va, ms) for va, ms in loads if ms]
    if not loads:
        return 0
    bias = 0
    if _get(db, 16, "H") == 3:
        bias = (cfg.pie_base - min(va for va, _ in loads)) & ~0xFFF & ((1 << 64) - 1)
    total = 0
    for va, ms in loads:
        lo = (va + bias) & ((1 << 64) - 1)
        if lo + ms <= ADDR_LIMIT:
            total += ms
    return total


def generate(seed: int, n: int) -> list[tuple[int, str, bytes, list[str]]]:
    """Case i: (i, source binary, mutated bytes, mutations) — a function of (seed, i)."""
    bins = binaries()
    blobs = {p: p.read_bytes() for p in bins}
    weights = [1 if p.name in REFUSED else 6 for p in bins]
    out = []
    for i in range(n):
        rng = random.Random(seed * 1_000_003 + i)
        src = rng.choices(bins, weights)[0]
        data, what = mutate(rng, blobs[src])
        out.append((i, src.name, data, what))
    return out


def _cfg(path: str) -> StartConfig:
    return StartConfig(argv=[path], env=[], exec_path=path, uid=1000, gid=1000)


def load_one(path: str, machine: bool = False) -> str:
    """Load ``path``: 'loaded' or 'error: <message>'; anything else raises."""
    mem = GuestMemory()
    try:
        load_elf(mem, path, _cfg(path))
    except DbtError as e:
        return f"error: {e}"
    finally:
        mem.close()
    if machine:
        m = Machine(path, config=RunConfig(accel="interp"), start=_cfg(path))
        m.close()
    return "loaded"


def one_line(outcome: str) -> bool:
    return outcome == "loaded" or (outcome.startswith("error: ") and len(outcome) > 7
                                   and "\n" not in outcome and "\r" not in outcome)


def run_cases(tmp_path: Path, seed: int, n: int) -> dict:
    path = str(tmp_path / "mutated.elf")
    stats = {"loaded": 0, "error": 0, "huge": []}
    for i, src, data, what in generate(seed, n):
        if mapped_bytes(data, _cfg(path)) > HUGE_BYTES:
            stats["huge"].append(i)
            continue
        with open(path, "wb") as f:
            f.write(data)
        case = f"seed {seed} case {i} ({src}: {'; '.join(what)})"
        try:
            outcome = load_one(path, machine=i % 4 == 0)
        except Exception as e:                # noqa: BLE001 - the finding, with its case
            raise AssertionError(f"{case}: {type(e).__name__}: {e}") from e
        assert one_line(outcome), f"{case}: not a one-line error: {outcome!r}"
        stats["loaded" if outcome == "loaded" else "error"] += 1
        if i % 8 == 7:
            gc.collect()                  # (see _CHILD: 16 MiB per GuestMemory otherwise)
    return stats


def test_mutated_elf_headers_load_or_fail_cleanly(tmp_path):
    s = run_cases(tmp_path, SEED, CASES)
    # the mutations reach both outcomes, and most are not diverted
    assert s["loaded"] > CASES // 10 and s["error"] > CASES // 4, s
    assert len(s["huge"]) < CASES // 10, s


@pytest.mark.slow
def test_mutated_elf_headers_load_or_fail_cleanly_long(tmp_path):
    s = run_cases(tmp_path, SEED + 1, CASES * SLOW_FACTOR)
    assert s["loaded"] > 0 and s["error"] > 0, s


def test_unmutated_binaries_load():
    for p in binaries():
        out = load_one(str(p), machine=True)
        assert one_line(out) and (out == "loaded") == (p.name not in REFUSED), (p, out)


def _set_phdr(name: str, index: int, field: str, value: int) -> bytes:
    d = bytearray((FIXTURES / name).read_bytes())
    off, fmt = PHDR[field]
    _put(d, _phdrs(d)[index] + off, fmt, value)
    return bytes(d)


def test_interpreter_name_is_shown_on_one_line(tmp_path):
    path = tmp_path / "interp.elf"
    path.write_bytes(_set_phdr("rv64_static", 2, "p_type", 3))
    out = load_one(str(path))
    assert out.startswith("error: ") and "dynamically linked" in out
    assert one_line(out), out


# ---- segments too large to load in this process ----------------------------------------

# (gc.collect: a closed GuestMemory keeps its 16 MiB of page bits until the cycle collector
# runs, and a few dozen loads between two collections exceed the child's data limit)
_CHILD = textwrap.dedent("""
    import gc, json, sys
    from tests.runtime.test_elf_fuzz import load_one
    out = []
    for path in sys.argv[1:]:
        try:
            out.append(load_one(path))
        except BaseException as e:
            out.append(f"crash: {type(e).__name__}: {e}")
        gc.collect()
        print(json.dumps(out[-1]), flush=True)
""")
CHILD_DATA_LIMIT = 512 << 20
CHILD_SECONDS = 120


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_DATA, (CHILD_DATA_LIMIT, CHILD_DATA_LIMIT))


def run_huge(tmp_path: Path, cases: list[tuple[int, str, bytes, list[str]]]) -> list[str]:
    """Load each case in one child limited to CHILD_DATA_LIMIT bytes of data and
    CHILD_SECONDS; each outcome as load_one gives it, or 'crash: ...' / 'timeout'."""
    paths = []
    for i, _src, data, _what in cases:
        p = tmp_path / f"huge{i}.elf"
        p.write_bytes(data)
        paths.append(str(p))
    try:
        r = subprocess.run([sys.executable, "-c", _CHILD, *paths], cwd=ROOT,
                           capture_output=True, timeout=CHILD_SECONDS, preexec_fn=_limit)
        lines = r.stdout.decode().splitlines()
    except subprocess.TimeoutExpired as e:
        lines = (e.stdout or b"").decode().splitlines()
    got = [json.loads(x) for x in lines]
    return got + ["timeout"] * (len(paths) - len(got))


def _memsz_case(memsz: int) -> tuple[int, str, bytes, list[str]]:
    """rv64_static with its last PT_LOAD's p_memsz set (a bss of that size)."""
    d = bytearray((FIXTURES / "rv64_static").read_bytes())
    i = _phdrs(d).index(_loads(d)[-1])
    return (-1, "rv64_static", _set_phdr("rv64_static", i, "p_memsz", memsz),
            [f"last PT_LOAD p_memsz={memsz:#x}"])


def test_huge_bss_is_refused_or_loaded(tmp_path):
    """Found by this target: a 64 GiB bss raised MemoryError (one Python object per page,
    the bss zero-filled with bytes(p_memsz)); it loads, within the child's limits."""
    out = run_huge(tmp_path, [_memsz_case(1 << 36), _memsz_case(1 << 30)])
    assert all(one_line(o) for o in out), out


def _check_diverted(tmp_path: Path, seed: int, n: int, at_most: int) -> None:
    cases = [c for c in generate(seed, n) if mapped_bytes(c[2], _cfg("x")) > HUGE_BYTES]
    assert cases
    cases = cases[:at_most]
    out = run_huge(tmp_path, cases)
    bad = [(f"seed {seed} case {c[0]}", c[1], c[3], o) for c, o in zip(cases, out)
           if not one_line(o)]
    assert not bad, bad


def test_huge_segments_from_the_fuzzer_are_refused_or_loaded(tmp_path):
    """The cases the default campaign diverts, each in the limited child."""
    _check_diverted(tmp_path, SEED, CASES, 40)


@pytest.mark.slow
def test_huge_segments_from_the_long_campaign_are_refused_or_loaded(tmp_path):
    _check_diverted(tmp_path, SEED + 1, CASES * SLOW_FACTOR, 400)
