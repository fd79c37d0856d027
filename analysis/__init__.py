"""dbtlab.analysis."""
