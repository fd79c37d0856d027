#!/bin/sh
# Rebuild the disassembler test binaries and their golden objdump listings. The binaries and
# the *.objdump.gz files are committed, so the tests need neither compiler nor objdump;
# this script documents how they were made (zig 0.17 from the test extra; Debian
# gcc-riscv64-linux-gnu 12, binutils-riscv64-linux-gnu 2.40).
set -e
cd "$(dirname "$0")"
ZIG="${ZIG:-${PYTHON:-python3} -m ziglang cc}"
OBJDUMP="${OBJDUMP:-riscv64-linux-gnu-objdump}"
# musl libc linked by lld at 0x1000000 (debug info stripped, symbols kept)
$ZIG -target riscv64-linux-musl -O2 -static -o disasm_musl disasm_prog.c -lm
riscv64-linux-gnu-strip --strip-debug disasm_musl
# freestanding, linked by GNU ld at 0x10000
riscv64-linux-gnu-gcc -O2 -g0 -static -nostdlib -ffreestanding -ffunction-sections \
    -Wl,--build-id=none -o disasm_gnu disasm_gnu.c
for b in disasm_musl disasm_gnu; do
    $OBJDUMP -d "$b" | gzip -9n > "$b.objdump.gz"
done
