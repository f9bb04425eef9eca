"""HSFM hyperparameter sweeps: `plan` (spec -> settings -> programs), `execute` (vmapped, sharded,
checkpointed runs), `report` (the summary files)."""
