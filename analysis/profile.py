"""Load and check profiles written by ``dbtlab run --profile`` or ``dbtlab.run(profile=True)``.

The on-disk format is documented in docs/profile-format.md; this module is the only reader.
It checks the format name and version before anything else looks at the data, so an old or
foreign file fails with one clear message instead of a KeyError three plots later.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from functools import cached_property
from typing import Any, Iterable

FORMAT = "dbtlab-profile"
#: the profile versions this reader understands
SUPPORTED_VERSIONS = (1,)
#: edge kinds of format version 1 (see docs/profile-format.md)
EDGE_KINDS = ("chained", "indirect", "dispatch", "exit")

_BLOCK_INTS = ("id", "pc", "end", "insns", "count")
_EDGE_INTS = ("src", "count")


class ProfileError(ValueError):
    """A profile that cannot be read: missing, damaged, or of an unknown format/version."""


class Profile:
    """One profiled run: the validated document plus convenient views of it.

    ``doc`` is the JSON document exactly as written; the properties below only read it.
    ``result`` is the ``dbtlab.Result`` when the profile came from ``from_result``.
    """

    def __init__(self, doc: dict, source: str = "<profile>", result: Any = None) -> None:
        validate(doc, source)
        self.doc = doc
        self.source = source
        self.result = result

    def __repr__(self) -> str:
        return (f"<Profile {self.name} {self.accel}: {self.instret} insns, "
                f"{len(self.blocks)} blocks, {len(self.edges)} edges>")

    # ---- the sections of the document ---------------------------------------------------
    @property
    def program(self) -> dict:
        return self.doc["program"]

    @property
    def name(self) -> str:
        """The program's file name (``sha256``)."""
        return os.path.basename(self.program.get("path") or "?")

    @property
    def argv(self) -> list[str]:
        return list(self.program.get("argv") or [])

    @property
    def functions(self) -> dict[str, tuple[int, int]]:
        """Symbol name -> (start, size) from the ELF symbol table."""
        return {k: (v[0], v[1]) for k, v in (self.program.get("functions") or {}).items()}

    @property
    def run(self) -> dict:
        return self.doc["run"]

    @property
    def regions(self) -> list[dict]:
        """Second-tier regions installed during the run (``id``, ``entry``, ``blocks``:
        first-tier block ids, ``insns``, ``installed_at``); empty for older profiles."""
        return list(self.doc.get("regions") or [])

    @property
    def accel(self) -> str | None:
        return self.run.get("accel")

    @property
    def instret(self) -> int:
        return int(self.run.get("instret") or 0)

    @property
    def wall(self) -> float | None:
        """Wall time of the run in seconds (None for a profile taken without a result)."""
        return self.run.get("wall")

    @property
    def exits(self) -> dict[str, int]:
        """Exits from translated code to Python, by reason."""
        return dict(self.run.get("exits") or {})

    @property
    def translation(self) -> dict:
        """The accelerator's statistics (blocks, modules, emit/compile seconds, links...)."""
        return dict(self.run.get("translation") or {})

    @property
    def blocks(self) -> list[dict]:
        return self.doc["blocks"]

    @property
    def edges(self) -> list[dict]:
        return self.doc["edges"]

    @property
    def modules(self) -> list[dict]:
        return self.doc.get("modules") or []

    @property
    def chain_events(self) -> list[dict]:
        return self.doc.get("chain_events") or []

    # ---- derived --------------------------------------------------------------------------
    @cached_property
    def block_by_id(self) -> dict[int, dict]:
        return {b["id"]: b for b in self.blocks}

    @cached_property
    def translated_insns(self) -> int:
        """Guest instructions executed in translated code (sum of count × insns)."""
        return sum(b["count"] * b["insns"] for b in self.blocks)

    @property
    def translation_seconds(self) -> float:
        """Python emission plus LLVM compilation, over the whole run."""
        t = self.translation
        if "emit_seconds" in t or "compile_seconds" in t:
            return float(t.get("emit_seconds", 0.0)) + float(t.get("compile_seconds", 0.0))
        return sum(m.get("emit_us", 0.0) + m.get("compile_us", 0.0) for m in self.modules) / 1e6

    @property
    def execution_seconds(self) -> float | None:
        """Wall time not spent translating (guest code, dispatcher, syscalls), or None."""
        return None if self.wall is None else max(0.0, self.wall - self.translation_seconds)

    def block_label(self, block: dict | int) -> str:
        """``function+0xoff`` (or the hex pc) for a block record or id."""
        b = self.block_by_id[block] if isinstance(block, int) else block
        return label_of(b)

    def save(self, path: str | os.PathLike) -> None:
        """Write the document back in the on-disk format (gzip when the name ends in .gz)."""
        data = json.dumps(self.doc, separators=(",", ":")).encode()
        if str(path).endswith(".gz"):
            data = gzip.compress(data)
        with open(path, "wb") as f:
            f.write(data)


def label_of(b: dict) -> str:
    fn = b.get("function")
    if fn:
        off = b.get("offset") or 0
        return f"{fn}+{off:#x}" if off else fn
    return f"{b['pc']:#x}"


# ---- loading ------------------------------------------------------------------------------
def load(source: Any) -> Profile:
    """A Profile from a file path (.json or .json.gz), a document dict, a ``dbtlab.Result``
    of a profiled run, or a Profile (returned as is)."""
    if isinstance(source, Profile):
        return source
    if isinstance(source, dict):
        return Profile(source, "<document>")
    if isinstance(source, (str, os.PathLike)):
        return load_file(source)
    if hasattr(source, "profile") and hasattr(source, "instret"):
        return from_result(source)
    raise TypeError(f"cannot make a profile from {type(source).__name__}")


def load_file(path: str | os.PathLike) -> Profile:
    """Read a profile file; gzip is recognised by its magic bytes, whatever the name."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ProfileError(f"cannot read {name}: {e.strerror or e}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as e:
            raise ProfileError(f"{name}: damaged gzip data ({e})") from None
    if not raw.strip():
        raise ProfileError(f"{name}: empty file, not a dbtlab profile")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProfileError(f"{name}: not a JSON file (binary data)") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        cut = e.pos >= len(text.rstrip()) - 1 or e.msg.startswith("Unterminated")
        what = "truncated JSON" if cut else "malformed JSON"
        raise ProfileError(f"{name}: {what} ({e.msg}: line {e.lineno} column {e.colno})") \
            from None
    return Profile(doc, name)


def from_result(result: Any) -> Profile:
    """The profile of a ``dbtlab.run(..., profile=True)`` result (kept as ``.result``)."""
    doc = getattr(result, "profile", None)
    if doc is None:
        raise ProfileError("this run was not profiled: pass profile=True to dbtlab.run "
                           "(with accel='llvm')")
    return Profile(doc, "<result>", result)


def profile_run(program: str, args: Iterable[str] = (), **run_options) -> Profile:
    """Run a guest program under the LLVM accelerator with profiling and return its Profile
    (``.result`` holds the run's output and statistics). Options go to ``dbtlab.run``."""
    import dbtlab
    run_options.setdefault("accel", "llvm")
    return from_result(dbtlab.run(program, list(args), profile=True, **run_options))


# ---- validation ---------------------------------------------------------------------------
def validate(doc: Any, source: str = "<profile>") -> None:
    """Raise ProfileError unless ``doc`` is a profile this reader understands."""
    def bad(msg: str) -> ProfileError:
        return ProfileError(f"{source}: {msg}")

    if not isinstance(doc, dict):
        raise bad(f"not a dbtlab profile (a JSON {type(doc).__name__}, expected an object)")
    fmt = doc.get("format")
    if fmt != FORMAT:
        raise bad(f"not a dbtlab profile (format {fmt!r}, expected {FORMAT!r})")
    ver = doc.get("version")
    if ver not in SUPPORTED_VERSIONS or isinstance(ver, bool):
        raise bad(f"profile format version {ver!r} is not supported (this dbtlab reads "
                  f"version {', '.join(map(str, SUPPORTED_VERSIONS))})")
    for key, typ in (("program", dict), ("run", dict), ("blocks", list), ("edges", list)):
        if not isinstance(doc.get(key), typ):
            raise bad(f"missing or invalid {key!r} section")
    for key in ("modules", "chain_events"):
        if not isinstance(doc.get(key, []), list):
            raise bad(f"invalid {key!r} section")
    ids = set()
    for i, b in enumerate(doc["blocks"]):
        if not isinstance(b, dict) or not all(_is_int(b.get(k)) for k in _BLOCK_INTS):
            raise bad(f"block record {i} lacks one of {', '.join(_BLOCK_INTS)}")
        if b["id"] in ids:
            raise bad(f"duplicate block id {b['id']}")
        ids.add(b["id"])
    for i, e in enumerate(doc["edges"]):
        if not isinstance(e, dict) or not all(_is_int(e.get(k)) for k in _EDGE_INTS):
            raise bad(f"edge record {i} lacks src or count")
        if e.get("kind") not in EDGE_KINDS:
            raise bad(f"edge record {i} has unknown kind {e.get('kind')!r}")
        if e["src"] not in ids or (e.get("dst") is not None and e["dst"] not in ids):
            raise bad(f"edge record {i} refers to a block that is not in the profile")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
