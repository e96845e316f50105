"""Training of derived networks: config, trainer, checkpoints, EMA, run directories."""
