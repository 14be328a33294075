"""keras_harden.privacy: differentially private training, its budget first.

- `epsilon`, `noise_multiplier`, `steps_for`: the privacy budget of DP-SGD
  (Poisson-subsampled Gaussian steps), as pure functions of numbers on
  Google's `dp-accounting` (RDP or PLD accountant).
- `PrivacyBudget`: a callback writing the epsilon spent so far (counted from
  the optimizer's steps) into the epoch logs, stopping before a target.
- `suggest`: candidate batch sizes, epochs and noise multipliers that meet a
  budget, ranked by the noise over the run, as a `Plan` (Markdown table).

Not here yet: the DP-SGD training itself (per-example clipping and noise)
and a membership-inference audit.
"""

from keras_harden.privacy.budget import epsilon, noise_multiplier, steps_for
from keras_harden.privacy.plan import Plan, suggest
from keras_harden.privacy.privacy_budget import PrivacyBudget

__all__ = [
    "Plan",
    "PrivacyBudget",
    "epsilon",
    "noise_multiplier",
    "steps_for",
    "suggest",
]
