"""Reading a classifier's outputs, shared by the families that score one."""

import numpy as np

__all__ = ["looks_like_probabilities"]


def looks_like_probabilities(outputs):
    """Whether rows of `outputs` (the last axis) are probabilities: in [0, 1]
    and summing to 1. Otherwise they are taken for logits.

    >>> looks_like_probabilities([[0.25, 0.75], [1.0, 0.0]])
    True
    >>> looks_like_probabilities([[2.0, -1.0]])
    False
    """
    out = np.asarray(outputs, dtype=np.float64)
    return bool(
        out.size
        and out.min() >= 0
        and out.max() <= 1
        and np.allclose(out.sum(-1), 1, atol=1e-3)
    )
