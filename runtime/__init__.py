"""The machine and everything that serves it, laid out as QEMU's tree:

* ``machine``, ``config``, ``errors``, ``cli``, ``profile``, ``disas`` — the machine (memory,
  process, CPU state, one accelerator), its options, its errors, the command line, the
  profile writer and ``dbtlab disas``;
* ``accel/`` — how guest code runs: the interpreter, the LLVM JIT, unicorn;
* ``linux/`` — the Linux process (loader, address space, syscalls);
* ``vm/`` — the VM-state stream, the snapshot store, live migration;
* ``monitor/`` — the main loop and QMP;
* ``oracle/`` — the bare machine, known deviations, difftest, the fuzzer.
"""
