"""The Linux process, as QEMU's linux-user: ELF loading, the guest's address space, the
process (descriptors, limits, identity) and the system-call layer (one module per family)."""
