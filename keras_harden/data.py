"""Data sets that need no network: scikit-learn's digits and image folders."""

import numpy as np

__all__ = ["load_digits", "image_folder"]


def load_digits(image_size=8, channels=1, test_fraction=0.25, seed=0):
    """Loads scikit-learn's handwritten digits as Keras-ready image arrays.

    1,797 grey 8x8 images of the digits 0-9, shipped inside scikit-learn (no
    download). Pixel values are rescaled from 0-16 to the 0-255 range that image
    layers expect. A stratified split keeps the class balance.

    Args:
        image_size: side of the returned square images; values above 8 are
            upsampled with nearest-neighbour repetition (8 must divide it).
        channels: 1 (grey) or 3 (grey repeated, for colour models).
        test_fraction: share of images held out, in (0, 1).
        seed: int seed of the split.

    Returns:
        `((x_train, y_train), (x_test, y_test))`, images `float32` of shape
        `(n, image_size, image_size, channels)` in [0, 255], labels `int32`.

    Example:

    >>> (x, y), (x_test, y_test) = kh.data.load_digits()
    >>> x.shape, int(x.max()) <= 255
    ((1347, 8, 8, 1), True)
    """
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    if image_size < 8 or image_size % 8:
        raise ValueError(
            f"`image_size` must be a multiple of 8. Received: image_size={image_size}"
        )
    if channels not in (1, 3):
        raise ValueError(f"`channels` must be 1 or 3. Received: channels={channels}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(
            "`test_fraction` must be in (0, 1). "
            f"Received: test_fraction={test_fraction}"
        )
    digits = sk_load_digits()
    images = digits.images.astype("float32") * (255.0 / 16.0)
    factor = image_size // 8
    if factor > 1:
        images = images.repeat(factor, axis=1).repeat(factor, axis=2)
    images = np.repeat(images[..., None], channels, axis=-1)
    labels = digits.target.astype("int32")
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, random_state=seed, stratify=labels
    )
    return (x_train, y_train), (x_test, y_test)


def image_folder(directory, image_size=(32, 32), batch_size=64, seed=0):
    """Reads a folder with one sub-folder of images per class as a `tf.data` set.

    Args:
        directory: the folder; each sub-folder name is a class.
        image_size: `(height, width)` images are resized to.
        batch_size: images per batch.
        seed: shuffling seed.

    Returns:
        A `tf.data.Dataset` of `(images, int labels)` batches, pixels in [0, 255].
    """
    import os

    import keras

    if not os.path.isdir(directory):
        raise ValueError(
            f"`directory` must be a folder of class sub-folders. "
            f"Received: directory={directory!r}"
        )
    return keras.utils.image_dataset_from_directory(
        directory,
        image_size=tuple(image_size),
        batch_size=batch_size,
        seed=seed,
        label_mode="int",
    )
