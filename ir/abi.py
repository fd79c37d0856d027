"""What translated code, the lowerings and every layer above agree on about the guest's
address space, and the one exception that reports a guest access the hardware refuses.

Translated code reaches guest address ``a`` at ``guest_base + a`` with no software check:
addresses at or beyond ``ADDR_LIMIT`` are clamped into ``GUARD_SIZE`` bytes of never-mapped
pages that follow the guest view, so they fault in the host and come back as guest faults.
The address space itself (who maps what) belongs to the runtime; these constants are the
contract between it and the code generator.
"""

from __future__ import annotations

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = ~(PAGE_SIZE - 1)
ADDR_BITS = 38                    # Sv39 user half: guest addresses are below 2**38
ADDR_LIMIT = 1 << ADDR_BITS
GUARD_SIZE = 1 << 16              # never-accessible pages after the guest view


class GuestFault(Exception):
    """A guest access the hardware would refuse. ``kind`` is a FAULT_* from ir.state."""

    def __init__(self, kind: int, addr: int) -> None:
        super().__init__(kind, addr)
        self.kind = kind
        self.addr = addr
