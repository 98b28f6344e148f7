"""``federation demo``: the whole consortium on one machine, on loopback."""
