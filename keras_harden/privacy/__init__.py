"""keras_harden.privacy: differentially private training, its budget first.

- `epsilon`, `noise_multiplier`, `steps_for`: the privacy budget of DP-SGD
  (Poisson-subsampled Gaussian steps), as pure functions of numbers on
  Google's `dp-accounting` (RDP or PLD accountant).
"""

from keras_harden.privacy.budget import epsilon, noise_multiplier, steps_for

__all__ = ["epsilon", "noise_multiplier", "steps_for"]
