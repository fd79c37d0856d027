"""dbtlab.ir."""
