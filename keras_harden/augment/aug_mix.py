"""AugMix with operation chains drawn per image at run time."""

import keras

from keras_harden._validation import check_int, check_number, check_positive
from keras_harden.augment import ops as aug_ops
from keras_harden.augment._layer import (
    AugmentLayer,
    ops,
    pick,
    random,
    signed_strengths,
)

# AugMix's default set leaves out the operations that overlap with the
# corruptions of ImageNet-C / CIFAR-C (colour, contrast, brightness, sharpness).
BASE_OPS = (
    "auto_contrast",
    "equalize",
    "posterize",
    "rotate",
    "solarize",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
)
EXTRA_OPS = ("color", "contrast", "brightness", "sharpness")


@keras.saving.register_keras_serializable(package="keras_harden")
class AugMix(AugmentLayer):
    """AugMix: a convex mix of random operation chains, drawn per image.

    For each image, `num_chains` chains are built; each chain has a depth
    drawn uniformly in `chain_depth` and applies that many random operations
    with magnitudes uniform in `[0, magnitude]`. The chains are mixed with
    Dirichlet(`alpha`) weights, and the mix is blended with the original
    image with a Beta(`alpha`, `alpha`) weight:
    `m x + (1 - m) sum_i w_i chain_i(x)`. Every choice is a tensor drawn
    from the layer's seed generator at run time, so inside `tf.data` each
    batch and each image gets new chains, and an int `seed` replays them
    (`keras.layers.AugMix` draws its chain with Python's `random` when the
    function is traced: frozen inside `tf.data`, and deaf to `seed`). Each
    operation is computed only for the images that chose it.

    Active when called with `training=True` (the default) and in `fit`;
    inactive in `predict`, `evaluate` and `keras_harden.export`.

    Args:
        value_range: `(low, high)` of the input values.
        num_chains: chains mixed per image.
        chain_depth: `(low, high)` number of operations per chain, inclusive.
        magnitude: top of the uniform magnitude range, in `[0, 1]`.
        alpha: Dirichlet and Beta concentration.
        all_ops: also use colour, contrast, brightness and sharpness.
        seed: int for reproducible draws, or None.
        **kwargs: base layer arguments (`name`, ...).

    Returns:
        Augmented images, same shape, dtype and value range as the input.

    Example:

    >>> import numpy as np, keras_harden as kh
    >>> augmix = kh.augment.AugMix(seed=0)
    >>> augmix(np.zeros((2, 32, 32, 3), "uint8")).dtype.name
    'uint8'

    References:
        Hendrycks et al., "AugMix: A simple data processing method to improve
        robustness and uncertainty", ICLR 2020
        (https://arxiv.org/abs/1912.02781); reference implementation
        github.com/google-research/augmix.
    """

    def __init__(
        self,
        value_range=(0, 255),
        num_chains=3,
        chain_depth=(1, 3),
        magnitude=0.3,
        alpha=1.0,
        all_ops=True,
        seed=None,
        **kwargs,
    ):
        super().__init__(value_range=value_range, seed=seed, **kwargs)
        check_int("num_chains", num_chains, minimum=1)
        try:
            low, high = chain_depth
            ok = all(isinstance(v, int) for v in chain_depth) and 1 <= low <= high
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(
                "`chain_depth` must be a pair of ints 1 <= low <= high. "
                f"Received: chain_depth={chain_depth!r}"
            )
        check_number("magnitude", magnitude, low=0, high=1)
        check_positive("alpha", alpha)
        self.num_chains = num_chains
        self.chain_depth = (chain_depth[0], chain_depth[1])
        self.magnitude = magnitude
        self.alpha = alpha
        self.all_ops = bool(all_ops)
        # The last name pads chains shorter than the longest depth.
        self._names = (
            list(BASE_OPS) + (list(EXTRA_OPS) if all_ops else []) + ["identity"]
        )

    def _draw(self, images, seed):
        """`{"operations": (N, num_chains, max depth) int32 indices into the
        operation list (steps past a chain's depth hold the padding
        identity), "strengths": (N, num_chains, max depth) signed strengths,
        "chain_weights": (N, num_chains) w ~ Dirichlet(alpha),
        "original_weight": (N,) m ~ Beta(alpha, alpha)}`."""
        n = ops.shape(images)[0]
        ops_count = len(self._names) - 1
        low, high = self.chain_depth
        weights = random.gamma((n, self.num_chains), self.alpha, seed=seed)
        weights = weights / ops.sum(weights, axis=1, keepdims=True)
        original = random.beta((n,), self.alpha, self.alpha, seed=seed)
        # One draw for all chains and steps: operation, level, sign; and depth.
        draws = random.uniform((n, self.num_chains, high, 3), seed=seed)
        depths = low + pick(
            random.uniform((n, self.num_chains), seed=seed), high - low + 1
        )
        choice = pick(draws[..., 0], ops_count)
        # Steps past a chain's depth apply the padding identity.
        steps = ops.arange(high, dtype="int32")
        choice = ops.where(steps < depths[:, :, None], choice, ops_count)
        level = draws[..., 1] * float(self.magnitude)
        strength = signed_strengths(self._names, choice, level, draws[..., 2])
        return {
            "operations": choice,
            "strengths": strength,
            "chain_weights": weights,
            "original_weight": original,
        }

    def _apply_unit(self, images, transformation):
        # x_aug = m x + (1 - m) sum_c w_c chain_c(x)
        choice, strength = transformation["operations"], transformation["strengths"]
        weights = transformation["chain_weights"]
        mix = ops.zeros_like(images)
        for c in range(self.num_chains):
            chain = images
            for step in range(self.chain_depth[1]):
                chain = aug_ops.apply_transforms(
                    self._names, choice[:, c, step], chain, strength[:, c, step]
                )
            mix = mix + weights[:, c, None, None, None] * chain
        m = transformation["original_weight"][:, None, None, None]
        return ops.clip(m * images + (1.0 - m) * mix, 0.0, 1.0)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_chains": self.num_chains,
                "chain_depth": list(self.chain_depth),
                "magnitude": self.magnitude,
                "alpha": self.alpha,
                "all_ops": self.all_ops,
            }
        )
        return config
