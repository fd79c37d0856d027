"""The monitor: the main loop that owns the vCPU thread and serves events (``mainloop``), and
the QMP server that speaks to it (``qmp``)."""
