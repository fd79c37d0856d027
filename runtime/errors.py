"""User-facing errors.

A ``DbtError`` is something the user can act on (a wrong file, an unsupported binary, a guest
that deadlocked): the CLI prints ``dbtlab: <message>`` as one line and exits with status 1,
without a traceback. Anything else escaping to the CLI is a bug in dbtlab.
"""

from __future__ import annotations


class DbtError(Exception):
    """An error meant for the user: its message is one self-contained line."""


class LoadError(DbtError):
    """The program cannot be loaded (missing, not a RISC-V RV64 static executable, ...)."""
