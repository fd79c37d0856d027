"""Our oracle tooling: the bare machine that runs instruction streams without a process
(``bare``), unicorn's known deviations from the spec (``deviations``), lockstep differential
testing of whole programs (``difftest``) and the differential fuzzer (``fuzz``)."""
