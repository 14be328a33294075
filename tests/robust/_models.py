"""Small classifiers with known weights for the attack tests.

`binary_linear()` is the worked example of the tests: logits `z = W x + b`
on 4 inputs, with the class weight vectors

    w0 = ( 0.5,  1.0, 0.0, -0.5),  b0 = 0.5
    w1 = ( 1.5, -1.0, 0.5,  0.5),  b1 = 0.0

so `z1 - z0 = d . x - 0.5` with `d = w1 - w0 = (1, -2, 0.5, 1)`,
`||d||_1 = 4.5` and `||d||_2 = sqrt(1 + 4 + 0.25 + 1) = 2.5`. At
`x = (0.5, 0.5, 0.5, 0.5)`: `z0 = 0.5 * 1.0 + 0.5 = 1.0`, `z1 = 0.5 * 1.5 =
0.75`, class 0 by a margin of 0.25.

For true class 0 the cross-entropy is `log(1 + exp(z1 - z0))`, whose input
gradient `sigmoid(z1 - z0) * d` always points along `d`: the loss is highest
in the L-inf ball at `x + eps * sign(d)` and in the L2 ball at
`x + eps * d / ||d||_2`, where the margin has shrunk by `eps * 4.5` and
`eps * 2.5`.
"""

import keras
import numpy as np

W0 = np.array([0.5, 1.0, 0.0, -0.5])
W1 = np.array([1.5, -1.0, 0.5, 0.5])
B = np.array([0.5, 0.0])
D = W1 - W0  # (1, -2, 0.5, 1)
D_L1 = 4.5
D_L2 = 2.5
CENTRE = np.full((1, 4), 0.5, "float32")


def binary_linear(softmax=False):
    """`z = W x + b` as one Dense layer (kernel `(in, out)`: column c is
    `w_c`); `softmax=True` outputs probabilities instead of logits."""
    dense = keras.layers.Dense(
        2,
        activation="softmax" if softmax else None,
        kernel_initializer=keras.initializers.Constant(np.stack([W0, W1], 1)),
        bias_initializer=keras.initializers.Constant(B),
    )
    return keras.Sequential([keras.Input((4,)), dense])


def three_corners():
    """Three classes on 2 inputs: `z0 = 4 x0 - 2`, `z1 = 4 x1 - 2`, `z2 = 0`.

    Class 0 wins where `x0 > 1/2` and `x0 > x1` (e.g. at (0.8, 0.2)), class
    1 where `x1 > 1/2` and `x1 > x0` (at (0.2, 0.8)), class 2 where both are
    below 1/2 (at (0.2, 0.2))."""
    dense = keras.layers.Dense(
        3,
        kernel_initializer=keras.initializers.Constant([[4.0, 0, 0], [0, 4.0, 0]]),
        bias_initializer=keras.initializers.Constant([-2.0, -2.0, 0.0]),
    )
    return keras.Sequential([keras.Input((2,)), dense])


def small_mlp(softmax=False, seed=0, input_shape=(4, 4, 1), classes=5):
    """A Sequential ReLU net (logits, or probabilities with `softmax`)."""
    init = keras.initializers.GlorotUniform(seed=seed)
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu", kernel_initializer=init),
            keras.layers.Dense(
                classes,
                activation="softmax" if softmax else None,
                kernel_initializer=init,
            ),
        ]
    )


def small_conv(softmax=True, seed=0, input_shape=(4, 4, 1), classes=5):
    """A functional conv net with batch norm (probabilities by default)."""
    init = keras.initializers.GlorotUniform(seed=seed)
    inputs = keras.Input(input_shape)
    h = keras.layers.Conv2D(4, 3, padding="same", kernel_initializer=init)(inputs)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Activation("relu")(h)
    h = keras.layers.Flatten()(h)
    outputs = keras.layers.Dense(
        classes, activation="softmax" if softmax else None, kernel_initializer=init
    )(h)
    return keras.Model(inputs, outputs)


def predict(model, x):
    return np.asarray(model.predict(x, verbose=0)).argmax(-1)
