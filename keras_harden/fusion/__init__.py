"""keras_harden.fusion."""
