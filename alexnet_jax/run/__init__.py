"""A training run: the config resolved once, the checks before anything
compiles, the loop and everything around it (checkpoints, the workdir,
metrics, signals, several processes)."""
