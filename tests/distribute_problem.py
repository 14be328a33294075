"""The small problem shared by the multi-worker test and its single-process
reference: same model, same data, same global batches."""

import keras
import numpy as np

GLOBAL_BATCH = 16
STEPS = 6


def dataset():
    import tensorflow as tf

    rng = np.random.RandomState(0)
    x = rng.randn(GLOBAL_BATCH * STEPS, 6).astype("float32") * 3.0
    y = rng.randint(0, 3, size=(GLOBAL_BATCH * STEPS,)).astype("int32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(
        GLOBAL_BATCH, drop_remainder=True
    )


def build_and_compile(rule):
    import keras_harden as kh

    init = keras.initializers.GlorotUniform(seed=1)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="tanh", kernel_initializer=init),
            keras.layers.Dense(3, kernel_initializer=init),
        ]
    )
    inner = keras.optimizers.SGD(0.5)
    optimizers = {
        "sgd": lambda: inner,
        "agc": lambda: kh.optimizers.AdaptiveGradientClipping(inner, clip_factor=0.05),
        "zclip": lambda: kh.optimizers.ZClip(inner, warmup_steps=2, z_threshold=1.0),
    }
    model.compile(
        optimizer=optimizers[rule](),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model
