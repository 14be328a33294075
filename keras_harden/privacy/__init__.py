"""keras_harden.privacy: differentially private training, its budget first.

- `epsilon`, `noise_multiplier`, `steps_for`: the privacy budget of DP-SGD
  (Poisson-subsampled Gaussian steps), as pure functions of numbers on
  Google's `dp-accounting` (RDP or PLD accountant).
- `PrivacyBudget`: a callback writing the epsilon spent so far (counted from
  the optimizer's steps) into the epoch logs, stopping before a target.
- `suggest`: candidate batch sizes, epochs and noise multipliers that meet a
  budget, ranked by the noise over the run, as a `Plan` (Markdown table).

- `DPTraining`: DP-SGD inside `compile` and `fit` (per-example clipping,
  ghost norms for Dense / Conv / Embedding chains, noise added once),
  trained on `PoissonBatches` (Poisson-sampled, padded, masked).
- `audit`: membership inference against a trained model (loss threshold,
  LiRA with shadow models): AUC and the true-positive rate at 1% and 0.1%
  false positives, as an `AuditReport` with an ROC plot.
"""

from keras_harden.privacy.audit import audit
from keras_harden.privacy.audit_report import AuditReport
from keras_harden.privacy.budget import epsilon, noise_multiplier, steps_for
from keras_harden.privacy.dp_training import DPTraining
from keras_harden.privacy.plan import Plan, suggest
from keras_harden.privacy.poisson_batches import PoissonBatches
from keras_harden.privacy.privacy_budget import PrivacyBudget

__all__ = [
    "AuditReport",
    "DPTraining",
    "Plan",
    "PoissonBatches",
    "PrivacyBudget",
    "audit",
    "epsilon",
    "noise_multiplier",
    "steps_for",
    "suggest",
]
