"""keras_harden: keep Keras training from blowing up and make trained models sturdier.

Six families, one sub-package each:

- `keras_harden.optimizers`: gradient clipping and non-finite step skipping as
  optimizer wrappers.
- `keras_harden.initializers`: initializers and data-dependent init procedures.
- `keras_harden.augment`: augmentation layers and pipelines.
- `keras_harden.fusion`: merging trained models (averaging, soups, ensembles,
  stacking).
- `keras_harden.diagnostics`: monitors, guards and reports for explosions.
- `keras_harden.robust`: adversarial attacks (FGSM, PGD, APGD) on any
  classifier.

Above the families, `keras_harden.search` orchestrates them: `harden` (a
learning-rate range test, then successive halving over the remedies, the
winner trained) and `lr_range_test`, both re-exported here, as are saving and
export from `keras_harden.saving`.
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
    robust,
    search,
)
from keras_harden.saving import export, load_model, save_model  # noqa: E402
from keras_harden.search import harden, lr_range_test  # noqa: E402

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
    "lr_range_test",
    "optimizers",
    "robust",
    "save_model",
    "search",
]
