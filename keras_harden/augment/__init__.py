"""keras_harden.augment: per-image augmentation layers and ready pipelines.

- `pipeline(preset, ...)`: `"light"`, `"standard"` or `"strong"` as one layer.
- `Pipeline(layers)`: any list of augmentation layers (ours, Keras's,
  keras-cv's) as one layer with the same guarantees.
- `RandAugment`, `TrivialAugment`, `AugMix`: policies drawing operations per
  image, each operation computed only for the images that chose it.
- `RandomResizedCrop`, `RandomApply`, `RandomChoice`: per-image building blocks.
- `MixUpCutMix`: per-image MixUp or CutMix on `(images, labels)` batches.

Every layer is active when called directly or in `fit`, and inactive in
`predict`, `evaluate` and `keras_harden.export`.
"""

from keras_harden.augment import ops
from keras_harden.augment.pipeline import PRESETS, Pipeline, pipeline
from keras_harden.augment.rand_augment import RandAugment
from keras_harden.augment.random_resized_crop import RandomResizedCrop

__all__ = [
    "PRESETS",
    "Pipeline",
    "RandAugment",
    "RandomResizedCrop",
    "ops",
    "pipeline",
]
