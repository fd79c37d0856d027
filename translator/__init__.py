"""dbtlab.translator."""
