"""RV64C: compressed instructions. Each expands at decode time to its base instruction
(the part after ``=>``, with any operands the expansion fixes), so there are no separate
semantics. ``!op=v`` marks an operand value that makes the encoding reserved or another
instruction; ``nonzero`` immediates are declared with their field (see encoding.py)."""

ENCODINGS = """
# -- quadrant 0
c.addi4spn  c_rdp c_nzuimm10             15..13=0 1..0=0   => addi rs1=2
c.fld       c_rdp c_rs1p c_uimm8         15..13=1 1..0=0   => fld
c.lw        c_rdp c_rs1p c_uimm7         15..13=2 1..0=0   => lw
c.ld        c_rdp c_rs1p c_uimm8         15..13=3 1..0=0   => ld
c.fsd       c_rs2p c_rs1p c_uimm8        15..13=5 1..0=0   => fsd
c.sw        c_rs2p c_rs1p c_uimm7        15..13=6 1..0=0   => sw
c.sd        c_rs2p c_rs1p c_uimm8        15..13=7 1..0=0   => sd
# -- quadrant 1
c.addi      c_rd_rs1 c_imm6              15..13=0 1..0=1   => addi
c.addiw     c_rd_rs1 c_imm6 !rd=0        15..13=1 1..0=1   => addiw
c.li        c_rd c_imm6                  15..13=2 1..0=1   => addi rs1=0
c.addi16sp  c_nzimm10 11..7=2            15..13=3 1..0=1   => addi rd=2 rs1=2
c.lui       c_rd c_nzimm18 !rd=2         15..13=3 1..0=1   => lui
c.srli      c_rd_rs1p c_uimm6 11..10=0   15..13=4 1..0=1   => srli
c.srai      c_rd_rs1p c_uimm6 11..10=1   15..13=4 1..0=1   => srai
c.andi      c_rd_rs1p c_imm6 11..10=2    15..13=4 1..0=1   => andi
c.sub       c_rd_rs1p c_rs2p 12=0 11..10=3 6..5=0 15..13=4 1..0=1   => sub
c.xor       c_rd_rs1p c_rs2p 12=0 11..10=3 6..5=1 15..13=4 1..0=1   => xor
c.or        c_rd_rs1p c_rs2p 12=0 11..10=3 6..5=2 15..13=4 1..0=1   => or
c.and       c_rd_rs1p c_rs2p 12=0 11..10=3 6..5=3 15..13=4 1..0=1   => and
c.subw      c_rd_rs1p c_rs2p 12=1 11..10=3 6..5=0 15..13=4 1..0=1   => subw
c.addw      c_rd_rs1p c_rs2p 12=1 11..10=3 6..5=1 15..13=4 1..0=1   => addw
c.j         c_jimm11                     15..13=5 1..0=1   => jal rd=0
c.beqz      c_rs1p c_bimm8               15..13=6 1..0=1   => beq rs2=0
c.bnez      c_rs1p c_bimm8               15..13=7 1..0=1   => bne rs2=0
# -- quadrant 2
c.slli      c_rd_rs1 c_uimm6             15..13=0 1..0=2   => slli
c.fldsp     c_rd c_uimm9sp               15..13=1 1..0=2   => fld rs1=2
c.lwsp      c_rd c_uimm8sp !rd=0         15..13=2 1..0=2   => lw rs1=2
c.ldsp      c_rd c_uimm9sp !rd=0         15..13=3 1..0=2   => ld rs1=2
c.jr        c_rs1 !rs1=0 12=0 6..2=0     15..13=4 1..0=2   => jalr rd=0 imm=0
c.mv        c_rd c_rs2 !rs2=0 12=0       15..13=4 1..0=2   => add rs1=0
c.ebreak    12=1 11..7=0 6..2=0          15..13=4 1..0=2   => ebreak
c.jalr      c_rs1 !rs1=0 12=1 6..2=0     15..13=4 1..0=2   => jalr rd=1 imm=0
c.add       c_rd_rs1 c_rs2 !rs2=0 12=1   15..13=4 1..0=2   => add
c.fsdsp     c_rs2 c_uimm9sp_s            15..13=5 1..0=2   => fsd rs1=2
c.swsp      c_rs2 c_uimm8sp_s            15..13=6 1..0=2   => sw rs1=2
c.sdsp      c_rs2 c_uimm9sp_s            15..13=7 1..0=2   => sd rs1=2
"""
