"""dbtlab.runtime."""
