"""What lines runs up: the settings a run was started with, as a command, a file or a URL; the
changes between two runs; and the scaling-law fit. Pure functions over configs and numbers."""
