"""keras_harden.optimizers."""
