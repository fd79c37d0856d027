"""Zifencei: instruction-fetch fence. Translated code is invalidated by stores to its
pages already; fence.i still ends the block and leaves to the runtime, as QEMU does."""

from dbtlab.translator.families import sem

ENCODINGS = """
fence.i  imm12 rs1 rd      14..12=1 6..2=0x03 1..0=3
"""


@sem("fence.i")
def fence_i(b, i): b.trap("fence.i")
