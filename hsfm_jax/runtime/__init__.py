"""Running experiments: the epoch loop, checkpoints, program cache, workdirs, processes."""
