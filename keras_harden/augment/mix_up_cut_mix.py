"""MixUp or CutMix per image, with integer or one-hot labels."""

import keras
from keras import ops

from keras_harden.augment._layer import RandomLayer, check_probability


def _check_alpha(name, value):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise ValueError(f"`{name}` must be a number >= 0. Received: {name}={value!r}")
    return value


def _beta(shape, alpha, seed_generator):
    """Beta(alpha, alpha) draws; alpha 0 means no mixing (lambda = 1)."""
    if alpha == 0:
        return ops.ones(shape)
    return keras.random.beta(shape, alpha, alpha, seed=seed_generator)


@keras.saving.register_keras_serializable(package="keras_harden")
class MixUpCutMix(RandomLayer):
    """MixUp or CutMix on `(images, labels)` batches, chosen per image.

    Each image `i` is mixed with a partner `j` drawn by a random permutation
    of the batch. With probability `prob` it is mixed at all; then with
    probability `switch_prob` by CutMix (a box of area `1 - lambda` of the
    partner, `lambda ~ Beta(cutmix_alpha, cutmix_alpha)`, pasted in; lambda
    is corrected to the box area left after clipping at the border), else by
    MixUp (`lambda x_i + (1 - lambda) x_j`, `lambda ~ Beta(mixup_alpha,
    mixup_alpha)`). Labels may be integer class ids `(N,)` or one-hot/soft
    `(N, num_classes)`; they are smoothed (`label_smoothing`) and mixed with
    the same lambda, so every output row is a distribution summing to 1.

    Setting `mixup_alpha=0` gives CutMix only, `cutmix_alpha=0` MixUp only.
    Meant for a `tf.data` map on batches: `ds.map(MixUpCutMix(10))`. With
    `training=False` the batch comes back with its labels turned into (smoothed)
    one-hot rows.

    Args:
        num_classes: number of classes.
        mixup_alpha: Beta parameter of MixUp (0 disables MixUp).
        cutmix_alpha: Beta parameter of CutMix (0 disables CutMix).
        switch_prob: probability of CutMix rather than MixUp when both are on.
        prob: probability that an image is mixed at all.
        label_smoothing: label smoothing in `[0, 1)` applied before mixing.
        seed: int for reproducible draws, or None.
        **kwargs: base layer arguments (`name`, ...).

    Returns:
        `(images, labels)`: images of the input's shape and dtype, float32
        labels `(N, num_classes)` whose rows sum to 1.

    Example:

    >>> import numpy as np, keras_harden as kh
    >>> mix = kh.augment.MixUpCutMix(num_classes=3, seed=0)
    >>> x, y = mix(np.ones((4, 8, 8, 1), "float32"), np.array([0, 1, 2, 0]))
    >>> y.shape
    TensorShape([4, 3])

    References:
        Zhang et al., "mixup: Beyond empirical risk minimization", ICLR 2018
        (https://arxiv.org/abs/1710.09412); Yun et al., "CutMix", ICCV 2019
        (https://arxiv.org/abs/1905.04899); timm's `data/mixup.py` (per-element
        mode).
    """

    groups_images = False  # one blend per image, no grouping by operation

    def __init__(
        self,
        num_classes,
        mixup_alpha=0.8,
        cutmix_alpha=1.0,
        switch_prob=0.5,
        prob=1.0,
        label_smoothing=0.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(seed=seed, **kwargs)
        if (
            not isinstance(num_classes, int)
            or isinstance(num_classes, bool)
            or num_classes < 2
        ):
            raise ValueError(
                "`num_classes` must be an int >= 2. "
                f"Received: num_classes={num_classes!r}"
            )
        self.num_classes = num_classes
        self.mixup_alpha = _check_alpha("mixup_alpha", mixup_alpha)
        self.cutmix_alpha = _check_alpha("cutmix_alpha", cutmix_alpha)
        self.switch_prob = check_probability("switch_prob", switch_prob)
        self.prob = check_probability("prob", prob)
        if (
            not isinstance(label_smoothing, (int, float))
            or not 0 <= label_smoothing < 1
        ):
            raise ValueError(
                "`label_smoothing` must be a number in [0, 1). "
                f"Received: label_smoothing={label_smoothing!r}"
            )
        self.label_smoothing = label_smoothing

    def _soft_labels(self, labels):
        labels = ops.convert_to_tensor(labels)
        if len(labels.shape) == 1 or (len(labels.shape) == 2 and labels.shape[-1] == 1):
            labels = ops.one_hot(
                ops.reshape(ops.cast(labels, "int32"), (-1,)), self.num_classes
            )
        labels = ops.cast(labels, "float32")
        if self.label_smoothing:
            labels = labels * (1.0 - self.label_smoothing) + (
                self.label_smoothing / self.num_classes
            )
        return labels

    def call(self, images, labels=None, training=True):
        if labels is None and isinstance(images, (tuple, list)):
            images, labels = images
        if labels is None:
            raise ValueError("MixUpCutMix needs `labels`: call it on (images, labels).")
        images = ops.convert_to_tensor(images)
        labels = self._soft_labels(labels)
        if not training or (self.mixup_alpha == 0 and self.cutmix_alpha == 0):
            return images, labels
        dtype = images.dtype
        x = ops.cast(images, "float32")
        n = ops.shape(x)[0]
        height, width = ops.shape(x)[1], ops.shape(x)[2]
        partner = keras.random.shuffle(ops.arange(n), seed=self.seed_generator)
        x_partner = ops.take(x, partner, axis=0)
        y_partner = ops.take(labels, partner, axis=0)

        draws = keras.random.uniform((n, 4), seed=self.seed_generator)
        mixed = draws[:, 0] < self.prob
        if self.mixup_alpha == 0:
            use_cutmix = ops.ones((n,), "bool")
        elif self.cutmix_alpha == 0:
            use_cutmix = ops.zeros((n,), "bool")
        else:
            use_cutmix = draws[:, 1] < self.switch_prob
        lam_mix = _beta((n,), self.mixup_alpha, self.seed_generator)
        lam_cut = _beta((n,), self.cutmix_alpha, self.seed_generator)

        # CutMix box: side sqrt(1 - lambda) of each dimension, centre uniform,
        # clipped at the border; lambda becomes the area actually kept.
        h, w = ops.cast(height, "float32"), ops.cast(width, "float32")
        cut = ops.sqrt(1.0 - lam_cut)
        cy, cx = draws[:, 2] * h, draws[:, 3] * w
        y0 = ops.round(ops.clip(cy - cut * h / 2, 0.0, h))
        y1 = ops.round(ops.clip(cy + cut * h / 2, 0.0, h))
        x0 = ops.round(ops.clip(cx - cut * w / 2, 0.0, w))
        x1 = ops.round(ops.clip(cx + cut * w / 2, 0.0, w))
        lam_cut = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
        rows = ops.cast(ops.arange(height), "float32")[None, :, None, None]
        cols = ops.cast(ops.arange(width), "float32")[None, None, :, None]
        inside = (
            (rows >= y0[:, None, None, None])
            & (rows < y1[:, None, None, None])
            & (cols >= x0[:, None, None, None])
            & (cols < x1[:, None, None, None])
        )

        lam = ops.where(use_cutmix, lam_cut, lam_mix)
        lam = ops.where(mixed, lam, 1.0)
        lam4 = lam[:, None, None, None]
        blended = lam4 * x + (1.0 - lam4) * x_partner
        pasted = ops.where(inside, x_partner, x)
        out = ops.where(use_cutmix[:, None, None, None], pasted, blended)
        out = ops.where(mixed[:, None, None, None], out, x)
        if "int" in str(dtype):
            out = ops.round(out)
        out = ops.cast(out, dtype)
        soft = lam[:, None] * labels + (1.0 - lam[:, None]) * y_partner
        return out, soft

    def compute_output_shape(self, images_shape, labels_shape=None):
        return images_shape, (images_shape[0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "mixup_alpha": self.mixup_alpha,
                "cutmix_alpha": self.cutmix_alpha,
                "switch_prob": self.switch_prob,
                "prob": self.prob,
                "label_smoothing": self.label_smoothing,
            }
        )
        return config
