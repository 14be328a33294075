"""keras_harden.initializers: initializers and init procedures for deep networks.

Per-tensor initializers (registered `keras.initializers.Initializer`
subclasses): `DeltaOrthogonal`, `ZerO`, `DepthScaled`, `FromStatistics`.
Model-level procedures: `lsuv` (data-driven rescaling), `seed_search`
(measured "lucky" seed), and `zero_init_layers` (the Fixup zero step).
"""

from keras_harden.initializers.delta_orthogonal import DeltaOrthogonal
from keras_harden.initializers.depth_scaled import DepthScaled, zero_init_layers
from keras_harden.initializers.from_statistics import FromStatistics
from keras_harden.initializers.lsuv import LSUVLayerReport, lsuv
from keras_harden.initializers.seed_search import SeedSearchResult, seed_search
from keras_harden.initializers.zero import ZerO

__all__ = [
    "DeltaOrthogonal",
    "DepthScaled",
    "FromStatistics",
    "LSUVLayerReport",
    "SeedSearchResult",
    "ZerO",
    "lsuv",
    "seed_search",
    "zero_init_layers",
]
