"""Holes: values a stencil learns when it is patched, not when it is generated.

A stencil is the lowering of one instruction form with its operands left open. The
semantics functions run unchanged against it: they receive an instruction whose fields
(``rd``, ``imm``...) and whose ``pc`` are ``Hole`` objects, and whatever Python arithmetic
they do on those (``(b.pc + i.imm) & MASK64``) builds an expression instead of a number.
When a builder primitive receives such an expression, the lowering turns it into a
reference to an external symbol; the object file leaves it as a relocation, and the patcher
evaluates the expression with the real instruction's fields and writes the result there.

Python control flow on a hole (``if i.imm:``) cannot be decided at generation time: it asks
the current ``Paths`` explorer for a decision, and the generator runs the semantics once
per path, so each path becomes a variant whose *guards* (the decisions it took) select it
at patch time.
"""

from __future__ import annotations

import operator
from typing import Callable

MASK64 = (1 << 64) - 1

_BIN: dict[str, Callable[[int, int], int]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "&": operator.and_,
    "|": operator.or_, "^": operator.xor, "<<": operator.lshift, ">>": operator.rshift,
    "==": lambda a, b: int(a == b), "!=": lambda a, b: int(a != b),
    "<": lambda a, b: int(a < b), "<=": lambda a, b: int(a <= b),
    ">": lambda a, b: int(a > b), ">=": lambda a, b: int(a >= b),
}


class Undecidable(Exception):
    """Python needed a decision on a hole outside of any path exploration."""


class Hole:
    """An integer expression over named fields, evaluated at patch time."""

    __slots__ = ("op", "args", "_key")

    def __init__(self, op: str, *args) -> None:
        self.op = op            # "field", "const" or an operator of _BIN, "neg", "~"
        self.args = args
        self._key: str | None = None

    @staticmethod
    def field(name: str) -> "Hole":
        return Hole("field", name)

    # ---- building ---------------------------------------------------------------------
    def _bin(self, op: str, other, swap: bool = False) -> "Hole":
        if not isinstance(other, (Hole, int)):
            return NotImplemented
        other = other if isinstance(other, Hole) else Hole("const", int(other))
        return Hole(op, other, self) if swap else Hole(op, self, other)

    def __neg__(self): return Hole("neg", self)
    def __invert__(self): return Hole("~", self)
    def __eq__(self, o): return self._bin("==", o)        # type: ignore[override]
    def __ne__(self, o): return self._bin("!=", o)        # type: ignore[override]
    def __lt__(self, o): return self._bin("<", o)
    def __le__(self, o): return self._bin("<=", o)
    def __gt__(self, o): return self._bin(">", o)
    def __ge__(self, o): return self._bin(">=", o)

    def __hash__(self) -> int:
        return hash(self.key())

    def __bool__(self) -> bool:
        if Paths.current is None:
            raise Undecidable(f"a decision on {self.key()} at generation time")
        return Paths.current.decide(self)

    def __index__(self) -> int:
        raise Undecidable(f"{self.key()} used as a Python integer at generation time")

    # ---- reading ----------------------------------------------------------------------
    def key(self) -> str:
        """Canonical text: equal keys mean equal expressions (the stencil's hole names)."""
        if self._key is None:
            if self.op == "field":
                self._key = self.args[0]
            elif self.op == "const":
                self._key = hex(self.args[0])
            elif self.op in ("neg", "~"):
                self._key = f"({'-' if self.op == 'neg' else '~'}{self.args[0].key()})"
            else:
                self._key = f"({self.args[0].key()}{self.op}{self.args[1].key()})"
        return self._key

    def fields(self) -> set[str]:
        if self.op == "field":
            return {self.args[0]}
        if self.op == "const":
            return set()
        return set().union(*(a.fields() for a in self.args))

    def eval(self, env: dict[str, int]) -> int:
        """The value for one instruction (Python ints: callers mask as they need)."""
        op = self.op
        if op == "field":
            return env[self.args[0]]
        if op == "const":
            return self.args[0]
        if op == "neg":
            return -self.args[0].eval(env)
        if op == "~":
            return ~self.args[0].eval(env)
        return _BIN[op](self.args[0].eval(env), self.args[1].eval(env))

    def compile(self) -> Callable[[dict[str, int]], int]:
        """A Python function computing ``eval`` (the patcher's hot path)."""
        src = self._py()
        return eval(f"lambda e: {src}")      # noqa: S307 - built from our own tree only

    def _py(self) -> str:
        op = self.op
        if op == "field":
            return f"e[{self.args[0]!r}]"
        if op == "const":
            return repr(self.args[0])
        if op == "neg":
            return f"(-{self.args[0]._py()})"
        if op == "~":
            return f"(~{self.args[0]._py()})"
        if op in ("==", "!=", "<", "<=", ">", ">="):
            return f"int({self.args[0]._py()} {op} {self.args[1]._py()})"
        return f"({self.args[0]._py()} {op} {self.args[1]._py()})"

    def to_json(self):
        """Nested lists (the library stores its holes and guards as data)."""
        if self.op in ("field", "const"):
            return [self.op, self.args[0]]
        return [self.op, *(a.to_json() for a in self.args)]

    @staticmethod
    def from_json(obj) -> "Hole":
        op = obj[0]
        if op == "field":
            return Hole.field(str(obj[1]))
        if op == "const":
            return Hole("const", int(obj[1]))
        if op not in _BIN and op not in ("neg", "~"):
            raise ValueError(f"not a hole expression: {op!r}")
        return Hole(op, *(Hole.from_json(a) for a in obj[1:]))

    def __repr__(self) -> str:
        return f"Hole{self.key()}"


class Paths:
    """Depth-first exploration of the decisions semantics take on holes.

    ``run(fn)`` calls ``fn()`` once per feasible path; each call sees a fixed sequence of
    decisions (False first), and every decision point past the end of that sequence is a new
    branch to explore later. The guards of a path are the (hole, decision) pairs it took."""

    current: "Paths | None" = None

    def __init__(self, limit: int = 16) -> None:
        self.limit = limit
        self.prefix: list[bool] = []
        self.taken: list[tuple[Hole, bool]] = []

    def decide(self, h: Hole) -> bool:
        i = len(self.taken)
        if i >= self.limit:
            raise Undecidable(f"more than {self.limit} decisions on holes")
        d = self.prefix[i] if i < len(self.prefix) else False
        self.taken.append((h, d))
        return d

    def run(self, fn: Callable[[], object]):
        """Yields (guards, result) per path."""
        stack: list[list[bool]] = [[]]
        while stack:
            self.prefix = stack.pop()
            self.taken = []
            prev, Paths.current = Paths.current, self
            try:
                result = fn()
            finally:
                Paths.current = prev
            guards = list(self.taken)
            for j in range(len(self.prefix), len(guards)):
                stack.append([d for _, d in guards[:j]] + [True])
            yield guards, result


# arithmetic on a hole (either side) builds an expression; comparisons too
for _name, _op in (("add", "+"), ("sub", "-"), ("mul", "*"), ("and", "&"), ("or", "|"),
                   ("xor", "^"), ("lshift", "<<"), ("rshift", ">>")):
    setattr(Hole, f"__{_name}__", lambda self, o, _op=_op: self._bin(_op, o))
    setattr(Hole, f"__r{_name}__", lambda self, o, _op=_op: self._bin(_op, o, True))
del _name, _op


def guards_hold(guards: list[tuple[Hole, bool]], env: dict[str, int]) -> bool:
    return all(bool(h.eval(env)) == d for h, d in guards)
