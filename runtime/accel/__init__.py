"""dbtlab.runtime.accel."""
