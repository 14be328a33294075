"""keras_harden.augment."""
