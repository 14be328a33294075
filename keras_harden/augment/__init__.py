"""keras_harden.augment: per-image augmentation layers and ready pipelines.

- `pipeline(preset, ...)`: `"light"`, `"standard"` or `"strong"` as one layer.
- `Pipeline(layers)`: any list of augmentation layers (ours, Keras's,
  keras-cv's) as one layer with the same guarantees.
- `RandAugment`, `TrivialAugment`, `AugMix`: policies drawing operations per
  image, each operation computed only for the images that chose it.
- `RandomResizedCrop`, `RandomApply`, `RandomChoice`: per-image building blocks.
- `MixUpCutMix`: per-image MixUp or CutMix on `(images, labels)` batches.

Every layer is active when called directly or in `fit`, and inactive in
`predict`, `evaluate` and `keras_harden.export`. The random layers make their
draws in `get_random_transformation` and apply given draws in
`transform_images` (`transform_labels` too for `MixUpCutMix`), as Keras's own
preprocessing layers do. They map `tf.data` batches under any Keras backend.
"""

from keras_harden.augment import ops
from keras_harden.augment.aug_mix import AugMix
from keras_harden.augment.mix_up_cut_mix import MixUpCutMix
from keras_harden.augment.pipeline import PRESETS, Pipeline, pipeline
from keras_harden.augment.rand_augment import RandAugment
from keras_harden.augment.random_apply import RandomApply
from keras_harden.augment.random_choice import RandomChoice
from keras_harden.augment.random_resized_crop import RandomResizedCrop
from keras_harden.augment.trivial_augment import TrivialAugment

__all__ = [
    "PRESETS",
    "AugMix",
    "MixUpCutMix",
    "Pipeline",
    "RandAugment",
    "RandomApply",
    "RandomChoice",
    "RandomResizedCrop",
    "TrivialAugment",
    "ops",
    "pipeline",
]
