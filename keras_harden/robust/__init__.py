"""keras_harden.robust: how a classifier holds up under attack and corruption.

Attacks, each `(model, x, y, eps, ...) -> adversarial inputs` as a NumPy
array, every point within `eps` of its `x` and inside `value_range`:

- `fgsm`: the fast gradient sign method (one step; L-inf or L2).
- `pgd`: projected gradient descent (L-inf or L2, random start, restarts,
  targeted; step `2.5 * eps / steps`).
- `apgd`: Auto-PGD with the cross-entropy or DLR loss (step-size halving at
  checkpoints, momentum; Croce and Hein 2020).
- `square`: the Square attack, a random search on the model's outputs only
  (no gradients), to catch gradient masking (Andriushchenko et al. 2020).

The evaluation:

- `evaluate`: clean accuracy, every attack at every eps, the worst case per
  example, gradient-masking checks and corruption accuracy, as a
  `RobustnessReport` (Markdown, plot, round trip).
- `corruptions`: common corruptions at five severities (`corrupt`) and the
  mean corruption accuracy.
- `gradient_masking`: the pure checks behind the report's warnings.
- `steps`: the attacks' step maths as pure NumPy functions.

Hardening:

- `AdversarialTraining`: PGD (Madry et al.), TRADES (Zhang et al.) or fast
  single-step adversarial training as a model wrapper kept inside
  `compile`/`fit`; the wrapped model stays an ordinary model.
- `CatastrophicOverfittingGuard`: a callback for fast training that watches
  PGD accuracy on a held batch, restores the best epoch and stops on a
  collapse.
- `TestTimeAugmentation`: a model averaging the predictions over fixed
  views of the input (saved and exported like any model).

On the TensorFlow and JAX backends.
"""

from keras_harden.robust import corruptions, gradient_masking, steps
from keras_harden.robust.adversarial_training import AdversarialTraining
from keras_harden.robust.apgd import apgd
from keras_harden.robust.corruptions import corrupt
from keras_harden.robust.evaluate import evaluate
from keras_harden.robust.fgsm import fgsm
from keras_harden.robust.overfitting import CatastrophicOverfittingGuard
from keras_harden.robust.pgd import pgd
from keras_harden.robust.report import RobustnessReport
from keras_harden.robust.square import square
from keras_harden.robust.test_time_augmentation import TestTimeAugmentation

__all__ = [
    "AdversarialTraining",
    "CatastrophicOverfittingGuard",
    "RobustnessReport",
    "TestTimeAugmentation",
    "apgd",
    "corrupt",
    "corruptions",
    "evaluate",
    "fgsm",
    "gradient_masking",
    "pgd",
    "square",
    "steps",
]
