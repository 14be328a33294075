"""keras_harden.robust: how a classifier holds up under attack.

- `fgsm`: the fast gradient sign method (one step; L-inf or L2).
- `pgd`: projected gradient descent (L-inf or L2, random start, restarts,
  targeted; step `2.5 * eps / steps`).
- `apgd`: Auto-PGD with the cross-entropy or DLR loss (step-size halving at
  checkpoints, momentum; Croce and Hein 2020).
- `steps`: the step maths as pure NumPy functions (sign and L2 steps,
  projections onto the L-inf and L2 balls, clipping to the value range).

Each attack takes `(model, x, y, eps, ...)` and returns the adversarial
inputs as a NumPy array, each within `eps` of its `x` and inside
`value_range`, on the TensorFlow and JAX backends.
"""

from keras_harden.robust import steps
from keras_harden.robust.apgd import apgd
from keras_harden.robust.fgsm import fgsm
from keras_harden.robust.pgd import pgd

__all__ = ["apgd", "fgsm", "pgd", "steps"]
