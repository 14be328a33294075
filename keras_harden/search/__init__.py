"""keras_harden.search: the orchestrator above the families.

- `harden`: a learning-rate range test, then successive halving over the
  remedies it suggests (rates, clips, AGC, re-initialisation); the winner is
  trained and lands in your model, with a `Prescription` saying why.
- `lr_range_test`: the range test alone (`RangeTest`: the largest stable
  rate, a suggested one, the curve and its plot).
"""

from keras_harden.search.candidates import Candidate
from keras_harden.search.harden import harden
from keras_harden.search.prescription import Contestant, Prescription
from keras_harden.search.range_test import RangeTest, lr_range_test

__all__ = [
    "Candidate",
    "Contestant",
    "Prescription",
    "RangeTest",
    "harden",
    "lr_range_test",
]
