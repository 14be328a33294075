"""keras_harden: keep Keras training from blowing up and make trained models sturdier.

Seven families, one sub-package each:

- `keras_harden.optimizers`: gradient clipping and non-finite step skipping as
  optimizer wrappers.
- `keras_harden.initializers`: initializers and data-dependent init procedures.
- `keras_harden.augment`: augmentation layers and pipelines.
- `keras_harden.fusion`: merging trained models (averaging, soups, ensembles,
  stacking).
- `keras_harden.diagnostics`: monitors, guards and reports for explosions.
- `keras_harden.robust`: adversarial attacks (FGSM, PGD, APGD) on any
  classifier.
- `keras_harden.privacy`: differentially private training and its privacy
  budget (epsilon of DP-SGD, the noise for a target).

Above the families, `keras_harden.search` orchestrates them: `harden` (a
learning-rate range test, then successive halving over the remedies, the
winner trained) and `lr_range_test`, both re-exported here, as are saving and
export from `keras_harden.saving`.

Imports are lazy: `import keras_harden` loads neither Keras nor TensorFlow; a
family is imported the first time it is used (`kh.optimizers`,
`from keras_harden import robust`, `import keras_harden.augment`). A family's
classes are registered with Keras's serialization when that family is
imported, so `kh.load_model` imports every family before it reads a file.
Plain `keras.saving.load_model` on a file holding keras_harden objects (an
optimizer wrapper, an augmentation layer, an initializer, a callback) needs
the families imported first: `import keras_harden.optimizers` (and so on), or
use `kh.load_model`.
"""

import importlib as _importlib
import pkgutil as _pkgutil
import typing as _typing

__version__ = "0.1.0"

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
    "privacy",
    "robust",
    "save_model",
    "search",
]

# sub-modules loaded on first attribute access; `saving` is not in `__all__`
# but has always been reachable as `kh.saving`
_SUBMODULES = frozenset(
    {
        "augment",
        "data",
        "diagnostics",
        "distribute",
        "fusion",
        "initializers",
        "optimizers",
        "privacy",
        "robust",
        "saving",
        "search",
    }
)
# functions re-exported from a sub-module: name -> sub-module
_FUNCTIONS = {
    "export": "saving",
    "save_model": "saving",
    "harden": "search",
    "lr_range_test": "search",
}

if _typing.TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs
    from keras_harden import (  # noqa: F401
        augment,
        data,
        diagnostics,
        distribute,
        fusion,
        initializers,
        optimizers,
        privacy,
        robust,
        saving,
        search,
    )
    from keras_harden.saving import export, save_model  # noqa: F401
    from keras_harden.search import harden, lr_range_test  # noqa: F401


def __getattr__(name):
    """Imports a sub-module (`kh.robust`) or a re-exported function
    (`kh.harden`) the first time it is asked for (PEP 562)."""
    if name in _SUBMODULES:
        # importing a sub-module also binds it here, so this runs once per name
        return _importlib.import_module(f"{__name__}.{name}")
    if name in _FUNCTIONS:
        module = _importlib.import_module(f"{__name__}.{_FUNCTIONS[name]}")
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _SUBMODULES | set(_FUNCTIONS))


def _import_families():
    """Imports every sub-package, which registers all of keras_harden's
    serializable classes with Keras; returns their sorted names.

    `import keras_harden` alone registers nothing (its imports are lazy), and
    Keras finds a class saved in a `.keras` file only by its registered name,
    so `load_model` calls this first. A new family is picked up without a
    list to update."""
    names = sorted(info.name for info in _pkgutil.iter_modules(__path__) if info.ispkg)
    for name in names:
        _importlib.import_module(f"{__name__}.{name}")
    return names


def load_model(path, custom_objects=None, safe_mode=True, compile=True):
    """`keras_harden.saving.load_model` (same arguments, same errors) with
    every keras_harden class registered first.

    The families are imported before loading, so a file holding keras_harden
    optimizer wrappers, layers, initializers, callbacks or models loads in a
    fresh process after `import keras_harden` alone. (`saving` is a low
    module that no family imports, so the family imports live here.)

    >>> soup = kh.load_model("saved_models/digits_soup.keras")  # doctest: +SKIP
    """
    _import_families()
    from keras_harden import saving

    return saving.load_model(
        path, custom_objects=custom_objects, safe_mode=safe_mode, compile=compile
    )
