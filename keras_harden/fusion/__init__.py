"""keras_harden.fusion: merge trained Keras models into one sturdier model.

- `check_compatible(models)`: same architecture, weight for weight.
- `average_weights(models, weights=None, recalibrate=None)`: a weight-averaged
  model (uniform soup), batch-norm statistics recomputed from data.
- `recalibrate_batchnorm(model, data)`: recompute batch-norm moving statistics.
- `greedy_soup(models, validation_data)`: Wortsman et al.'s greedy soup;
  returns `(model, report)`.
- `ensemble(models, method="average"|"concatenate", head=None)`: one functional
  model over a shared input.
- `stack(models, meta_model=None, holdout_data=...)`: stacked generalisation.
- `merge(base, tunes, method="task_arithmetic"|"ties"|"dare"|"dare_ties"|"slerp")`:
  fine-tunes of one base merged through their task vectors.
- `StochasticWeightAveraging`: a callback averaging weights along one run.
- `align(reference, model, data=None)`: `model` with its hidden units
  permuted to match `reference`'s (Git Re-Basin), its function unchanged.
- `repair(merged, endpoints, data)`: reset a merged model's unit statistics
  to its endpoints' (REPAIR).
- `interpolation(a, b, data, steps=11)`: loss and accuracy along the linear
  path between two models, naive and aligned.
"""

from keras_harden.fusion.align import align
from keras_harden.fusion.averaging import average_weights
from keras_harden.fusion.batchnorm import recalibrate_batchnorm
from keras_harden.fusion.compat import check_compatible
from keras_harden.fusion.ensemble import ensemble
from keras_harden.fusion.interpolation import InterpolationResult, interpolation
from keras_harden.fusion.merge import merge
from keras_harden.fusion.repair import repair
from keras_harden.fusion.soup import SoupReport, SoupResult, greedy_soup
from keras_harden.fusion.stacking import stack
from keras_harden.fusion.swa import StochasticWeightAveraging

__all__ = [
    "InterpolationResult",
    "SoupReport",
    "SoupResult",
    "StochasticWeightAveraging",
    "align",
    "average_weights",
    "check_compatible",
    "ensemble",
    "greedy_soup",
    "interpolation",
    "merge",
    "recalibrate_batchnorm",
    "repair",
    "stack",
]
