"""The fuzzer's instruction classes and their default weights (a module of its own so
that building the command line's help imports nothing else)."""

#: default weight of each instruction class (relative; 0 disables a class)
DEFAULT_WEIGHTS: dict[str, float] = {
    "alu": 14,               # RV64I register/immediate arithmetic, shifts, lui, auipc
    "mul": 4,                # M extension
    "load": 5,               # integer loads (incl. compressed, misaligned, page-crossing)
    "store": 5,              # integer stores
    "fload": 3,              # flw/fld (c.fld, c.fldsp)
    "fstore": 2,             # fsw/fsd (c.fsd, c.fsdsp)
    "amo": 3,                # AMOs on aligned addresses in the window
    "lrsc": 2,               # LR/SC sequences (and lone LR, lone SC)
    "lrsc_mixed": 1,         # LR and SC of different sizes (unicorn: sc.w after lr.d may store
                             # and still report failure, see oracle/deviations.py)
    "fp_arith": 16,          # F/D arithmetic, fused multiply-add, min/max, sign injection,
                             # compares, fclass, in every static and the dynamic rounding mode
    "fp_cvt": 7,             # conversions int<->float, single<->double, fmv
    "csr": 3,                # csrr* on fflags, frm, fcsr
    "branch": 5,             # conditional branches inside the stream (c.beqz/c.bnez too)
    "jump": 2,               # jal, c.j, auipc+jalr, auipc+addi+c.jr/c.jalr
    "compressed": 9,         # compressed arithmetic and moves (memory ones come with load/store)
    "fence": 1,              # fence, fence.tso, fence.i
    "system": 0.2,           # ecall, ebreak, c.ebreak in the middle (ends the case)
    "illegal": 0.4,          # illegal encodings (ends the case)
    "fault": 0.3,            # accesses to unmapped or read-only memory (ends the case)
    "misaligned_atomic": 0.2,  # AMO / LR on a misaligned address (ends the case)
    "sc_misaligned": 0.1,    # SC on a misaligned address (ends the case; unicorn does not
                             # fault: the supplement's sc-misaligned-no-fault)
}
