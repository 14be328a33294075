"""MixUp or CutMix per image, with integer or one-hot labels."""

import keras

from keras_harden._validation import check_int, check_number
from keras_harden.augment._layer import (
    RandomLayer,
    cast_like,
    check_probability,
    ops,
    random,
)


def _beta(shape, alpha, seed):
    """Beta(alpha, alpha) draws; alpha 0 means no mixing (lambda = 1)."""
    if alpha == 0:
        return ops.ones(shape)
    return random.beta(shape, alpha, alpha, seed=seed)


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
    >>> tuple(y.shape)
    (4, 3)

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
        check_int("num_classes", num_classes, minimum=2)
        self.num_classes = num_classes
        self.mixup_alpha = check_number("mixup_alpha", mixup_alpha, low=0)
        self.cutmix_alpha = check_number("cutmix_alpha", cutmix_alpha, low=0)
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

    def get_random_transformation(self, data, training=True, seed=None):
        """`{"partners": (N,) int32 index of each image's partner, "cutmix":
        (N,) bool, CutMix rather than MixUp, "weights": (N,) float lambda,
        the share of the image's own pixels and label (1 where not mixed),
        "boxes": (N, 4) CutMix boxes (top, left, bottom, right) in pixels,
        pasted from the partner}`; None with `training=False` or with both
        alphas 0."""
        if not isinstance(data, dict) or data.get("labels") is None:
            raise ValueError(
                "MixUpCutMix needs labels: call it on (images, labels). "
                "Received: labels=None"
            )
        if self.mixup_alpha == 0 and self.cutmix_alpha == 0:
            return None
        return super().get_random_transformation(data, training, seed)

    def _draw(self, images, seed):
        n = ops.shape(images)[0]
        partners = random.shuffle(ops.arange(n), seed=seed)
        draws = random.uniform((n, 4), seed=seed)
        mixed = draws[:, 0] < self.prob
        if self.mixup_alpha == 0:
            cutmix = ops.ones((n,), "bool")
        elif self.cutmix_alpha == 0:
            cutmix = ops.zeros((n,), "bool")
        else:
            cutmix = draws[:, 1] < self.switch_prob
        lam_mix = _beta((n,), self.mixup_alpha, seed)
        lam_cut = _beta((n,), self.cutmix_alpha, seed)
        # CutMix box: side sqrt(1 - lambda) of each dimension, centre uniform,
        # clipped at the border; lambda becomes the area actually kept.
        h = ops.cast(ops.shape(images)[1], "float32")
        w = ops.cast(ops.shape(images)[2], "float32")
        cut = ops.sqrt(1.0 - lam_cut)
        cy, cx = draws[:, 2] * h, draws[:, 3] * w
        y0 = ops.round(ops.clip(cy - cut * h / 2, 0.0, h))
        y1 = ops.round(ops.clip(cy + cut * h / 2, 0.0, h))
        x0 = ops.round(ops.clip(cx - cut * w / 2, 0.0, w))
        x1 = ops.round(ops.clip(cx + cut * w / 2, 0.0, w))
        lam_cut = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
        weights = ops.where(mixed, ops.where(cutmix, lam_cut, lam_mix), 1.0)
        return {
            "partners": ops.cast(partners, "int32"),
            "cutmix": ops.logical_and(mixed, cutmix),
            "weights": weights,
            "boxes": ops.stack([y0, x0, y1, x1], axis=1),
        }

    def _apply(self, images, transformation):
        # MixUp: w x + (1 - w) x_partner; CutMix: the partner's pixels in the
        # box, the image's own elsewhere.
        x = ops.cast(images, "float32")
        partner = ops.take(x, transformation["partners"], axis=0)
        w = transformation["weights"][:, None, None, None]
        blended = w * x + (1.0 - w) * partner
        box = transformation["boxes"][:, :, None, None, None]
        rows = ops.cast(ops.arange(ops.shape(x)[1]), "float32")[None, :, None, None]
        cols = ops.cast(ops.arange(ops.shape(x)[2]), "float32")[None, None, :, None]
        inside = (rows >= box[:, 0]) & (rows < box[:, 2])
        inside = inside & (cols >= box[:, 1]) & (cols < box[:, 3])
        pasted = ops.where(inside, partner, x)
        out = ops.where(transformation["cutmix"][:, None, None, None], pasted, blended)
        return cast_like(out, images.dtype)

    def transform_labels(self, labels, transformation, training=True):
        """Labels as (smoothed) distributions `(N, num_classes)`, mixed with
        the images' weights in training."""
        labels = self._soft_labels(labels)
        if not training or transformation is None:
            return labels
        w = transformation["weights"][:, None]
        partner = ops.take(labels, transformation["partners"], axis=0)
        return w * labels + (1.0 - w) * partner

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

    def label_output_shape(self, images_shape, labels_shape):
        return (images_shape[0], self.num_classes)

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
