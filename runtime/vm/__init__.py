"""VM services, as QEMU's migration/: the versioned VM-state stream (``vmstate``), the SQLite
snapshot store (``snapshots``) and live migration over a socket (``migration``)."""
