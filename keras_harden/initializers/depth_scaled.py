"""Fixup-style depth scaling of a base initializer for residual branches."""

import keras

from keras_harden._validation import check_int

__all__ = ["DepthScaled", "zero_init_layers"]


def _is_unseeded(initializer):
    try:
        config = initializer.get_config()
    except NotImplementedError:
        return False
    return "seed" in config and config["seed"] is None


@keras.saving.register_keras_serializable(package="keras_harden")
class DepthScaled(keras.initializers.Initializer):
    """A base initializer scaled down by the Fixup rule for residual branches.

    Fixup (Zhang, Dauphin and Ma, 2019) trains residual networks without
    normalisation by (1) scaling the weights of every layer inside a residual
    branch by `L ** (-1 / (2 m - 2))`, with `L` residual branches and `m`
    layers per branch, and (2) initialising the last layer of every branch and
    the classifier to zero (scalar biases and a multiplier per branch complete
    the recipe; they are architecture, not initialisation). With (1) the
    variance the branches add to the residual stream stays O(1) in total
    instead of growing with depth.

    Use `DepthScaled` for the layers *inside* the branches except the last,
    and `zero_init_layers` (or `kernel_initializer="zeros"`) for each branch's
    last layer and the classifier:

        scaled = DepthScaled("he_normal", num_blocks=16, layers_per_block=2)
        h = Conv2D(c, 3, padding="same", kernel_initializer=scaled)(x)
        h = Conv2D(c, 3, padding="same", kernel_initializer="zeros")(relu(h))
        x = x + h

    Seeds: an int-seeded or `SeedGenerator`-seeded base behaves as that base
    does. An *unseeded* base (e.g. the string `"he_normal"`) would, in Keras,
    return the same tensor on every call (DESIGN trap 8): `DepthScaled` calls a
    fresh clone of an unseeded base on every call instead, so each layer gets
    its own draw.

    Args:
        initializer: the base initializer (name, config dict or instance).
        num_blocks: `L`, the number of residual branches, an int >= 1.
        layers_per_block: `m`, layers per branch, an int >= 2.

    Returns:
        Calling the instance with `(shape, dtype=None)` returns the base
        initializer's tensor times `factor`.

    Example:

    >>> init = kh.initializers.DepthScaled("he_normal", num_blocks=16)
    >>> round(init.factor, 4)  # 16 ** (-1 / 2)
    0.25
    >>> layer = keras.layers.Dense(64, kernel_initializer=init)

    References:
        Zhang, Dauphin, Ma. "Fixup Initialization: Residual Learning Without
        Normalization", ICLR 2019. https://arxiv.org/abs/1901.09321
        (reference code: https://github.com/hongyi-zhang/Fixup).
    """

    def __init__(self, initializer="he_normal", num_blocks=1, layers_per_block=2):
        check_int("num_blocks", num_blocks, minimum=1)
        # m >= 2: the Fixup exponent -1 / (2 m - 2) is undefined for m = 1.
        check_int("layers_per_block", layers_per_block, minimum=2)
        try:
            base = keras.initializers.get(initializer)
        except ValueError as error:
            raise ValueError(
                "`initializer` must name or be a Keras initializer. "
                f"Received: initializer={initializer!r}"
            ) from error
        if base is None:
            raise ValueError(
                "`initializer` must name or be a Keras initializer. "
                f"Received: initializer={initializer!r}"
            )
        self.initializer = base
        self.num_blocks = num_blocks
        self.layers_per_block = layers_per_block

    @property
    def factor(self):
        """`num_blocks ** (-1 / (2 * layers_per_block - 2))`."""
        return float(self.num_blocks ** (-1.0 / (2 * self.layers_per_block - 2)))

    def __call__(self, shape, dtype=None):
        base = self.initializer
        if _is_unseeded(base):
            base = base.clone()
        values = base(shape, dtype=dtype)
        return keras.ops.cast(values * self.factor, values.dtype)

    def get_config(self):
        return {
            "initializer": keras.saving.serialize_keras_object(self.initializer),
            "num_blocks": self.num_blocks,
            "layers_per_block": self.layers_per_block,
        }


def zero_init_layers(layers):
    """Sets the kernels of the given built layers to zero (Fixup step 2).

    Fixup initialises the last layer of every residual branch and the final
    classifier to zero, so at step 0 each branch adds nothing and the network
    is its shortcut path. Pass those layers (objects, or use
    `[model.get_layer(name) for name in names]`). Every kernel-like weight
    (`kernel`, `depthwise_kernel`, `pointwise_kernel`) is zeroed; biases and
    all other weights are left alone (Keras biases start at zero already).

    Args:
        layers: an iterable of built Keras layers.

    Returns:
        A list of `(layer_name, weight_name)` pairs that were zeroed.

    Example:

    >>> head = keras.layers.Dense(10, name="head")
    >>> head.build((None, 64))
    >>> kh.initializers.zero_init_layers([head])
    [('head', 'kernel')]
    """
    zeroed = []
    for layer in layers:
        found = False
        for name in ("kernel", "depthwise_kernel", "pointwise_kernel"):
            variable = getattr(layer, name, None)
            if isinstance(variable, keras.Variable):
                variable.assign(keras.ops.zeros(variable.shape, dtype=variable.dtype))
                zeroed.append((layer.name, name))
                found = True
        if not found:
            raise ValueError(
                "`layers` must be built layers with a kernel. "
                f"Received: layers containing {layer.name!r} ({type(layer).__name__})"
            )
    return zeroed
