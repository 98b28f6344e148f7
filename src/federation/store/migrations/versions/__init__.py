"""Migration scripts, oldest first; each names the revision it follows."""
