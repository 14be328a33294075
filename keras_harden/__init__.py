"""keras_harden: keep Keras training from blowing up and make trained models sturdier.

Five families, one sub-package each:

- `keras_harden.optimizers`: gradient clipping and non-finite step skipping as
  optimizer wrappers.
- `keras_harden.initializers`: initializers and data-dependent init procedures.
- `keras_harden.augment`: augmentation layers and pipelines.
- `keras_harden.fusion`: merging trained models (averaging, soups, ensembles,
  stacking).
- `keras_harden.diagnostics`: monitors, guards and reports for explosions.

Saving and export live in `keras_harden.saving` and are re-exported here, as
is `harden` (`keras_harden.diagnostics.harden`), the one-call prescription.
"""

__version__ = "0.1.0"

from keras_harden import (  # noqa: E402
    augment,
    data,
    diagnostics,
    distribute,
    fusion,
    initializers,
    optimizers,
)
from keras_harden.diagnostics import harden  # noqa: E402
from keras_harden.saving import export, load_model, save_model  # noqa: E402

__all__ = [
    "__version__",
    "augment",
    "data",
    "diagnostics",
    "distribute",
    "export",
    "fusion",
    "harden",
    "initializers",
    "load_model",
    "optimizers",
    "save_model",
]
