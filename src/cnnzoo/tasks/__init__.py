"""Tasks: instantiate a run from its Hydra config, run it, write its results."""
