"""dbtlab.runtime.syscalls."""
