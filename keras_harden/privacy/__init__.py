"""keras_harden.privacy: differentially private training, its budget first.

- `epsilon`, `noise_multiplier`, `steps_for`: the privacy budget of DP-SGD
  (Poisson-subsampled Gaussian steps), as pure functions of numbers on
  Google's `dp-accounting` (RDP or PLD accountant).
- `PrivacyBudget`: a callback writing the epsilon spent so far (counted from
  the optimizer's steps) into the epoch logs, stopping before a target.
"""

from keras_harden.privacy.budget import epsilon, noise_multiplier, steps_for
from keras_harden.privacy.privacy_budget import PrivacyBudget

__all__ = ["PrivacyBudget", "epsilon", "noise_multiplier", "steps_for"]
