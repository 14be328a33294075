"""keras_harden.diagnostics: see and survive explosions.

- `GradientMonitor`: gradient norms and update-to-weight ratios in the logs,
  the progress bar, `History` and TensorBoard.
- `SpikeGuard`: rolls back to the last good weights and optimizer state on
  NaN/Inf or a loss spike, lowers the learning rate and carries on.
- `diagnose`: a few forward/backward passes that leave the model untouched and
  return a `Report` (verdict, layers responsible, recommendations).
"""

from keras_harden.diagnostics.diagnose import diagnose
from keras_harden.diagnostics.gradient_monitor import GradientMonitor
from keras_harden.diagnostics.report import Report
from keras_harden.diagnostics.spike_guard import SpikeGuard

__all__ = [
    "GradientMonitor",
    "Report",
    "SpikeGuard",
    "diagnose",
]
