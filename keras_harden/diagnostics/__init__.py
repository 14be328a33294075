"""keras_harden.diagnostics."""
