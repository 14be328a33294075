"""keras_harden.initializers."""
