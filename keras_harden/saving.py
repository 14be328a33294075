"""Saving, loading and exporting models safely.

- `save_model` writes a `.keras` file atomically: beside the target, then renamed,
  so an interrupted save never leaves a half-written file where a good one was.
- Neither `save_model` nor `export` writes over anything by surprise: an
  existing model is replaced only with `overwrite=True`, and a file is never
  replaced by a folder (or a folder by a file), nor a folder holding anything
  but a SavedModel deleted, whatever `overwrite` says.
- `load_model` reads a `.keras` file or a TensorFlow SavedModel directory with
  Keras's `safe_mode` on, and turns every failure into one `ValueError` naming
  the file.
- `export` writes a SavedModel whose `serve` endpoint runs the model in
  inference mode (Keras's own `model.export` calls the model without
  `training=False`, so augmentation layers stay on in `serve`).
"""

import os
import shutil
import tempfile
import zipfile

import keras

from keras_harden._validation import check_bool

__all__ = [
    "check_export_target",
    "check_save_target",
    "export",
    "load_model",
    "save_model",
    "serve",
]


def save_model(model, path, overwrite=False):
    """Saves `model` to the `.keras` file `path` atomically.

    The archive is written to a temporary file in the same directory and then
    renamed over `path`, so readers see either the old file or the new one.

    Args:
        model: a Keras model.
        path: destination, ending in `.keras`.
        overwrite: bool; replace an existing file at `path`. Without it an
            existing file is an error and stays as it was. A directory at
            `path` is never replaced.

    Returns:
        The path written, as a string.

    Raises:
        ValueError: naming `path` when it exists and `overwrite` is off, or is
            a directory; nothing is written then.

    Example:

    >>> kh.save_model(model, "saved_models/soup.keras")  # doctest: +SKIP
    """
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ValueError(f"`path` must end with '.keras'. Received: path={path!r}")
    check_save_target(path, overwrite)
    return write_atomically(path, model.save)


def write_atomically(path, write):
    """Calls `write(temporary_path)` for a temporary file beside `path` (same
    extension), then renames it over `path`: readers see the old file or the
    new one, never half of one. Returns `path`."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    suffix = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(suffix=suffix, prefix=".tmp-", dir=directory)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _file_mode(path))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def _file_mode(path):
    """The permissions a new file gets: those of the file replaced, else the
    usual `0o666` less the umask (`mkstemp` would leave `0o600`)."""
    if os.path.exists(path):
        return os.stat(path).st_mode & 0o777
    return 0o666 & ~_umask()


def _umask():
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _check_overwrite(overwrite):
    check_bool("overwrite", overwrite)


def check_save_target(path, overwrite=False):
    """Raises the `ValueError` that `save_model(..., path, overwrite)` would,
    before any work is done (the command line checks its output path first)."""
    _check_overwrite(overwrite)
    if os.path.isdir(path):
        raise ValueError(
            f"{path!r} is a directory; save_model writes a `.keras` file and never "
            f"replaces a directory. Choose another path. Received: path={path!r}"
        )
    if os.path.lexists(path) and not overwrite:
        raise ValueError(
            f"{path!r} already exists. Pass overwrite=True to replace it. "
            f"Received: path={path!r}, overwrite=False"
        )


def _is_saved_model_dir(path):
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "saved_model.pb"))


# What a TensorFlow SavedModel directory holds; anything else in a folder means
# it is not (only) an export, and deleting it would lose the user's files.
_SAVED_MODEL_ENTRIES = {
    "saved_model.pb",
    "saved_model.pbtxt",
    "fingerprint.pb",
    "keras_metadata.pb",
    "variables",
    "assets",
}


def check_export_target(path, overwrite=False):
    """Raises the `ValueError` that `export(..., path, overwrite)` would: a
    target is fine when it is new, an empty directory, or (with
    `overwrite=True`) an earlier SavedModel and nothing else."""
    _check_overwrite(overwrite)
    path = os.fspath(path).rstrip("/")
    if not os.path.lexists(path):
        return
    if not os.path.isdir(path) or os.path.islink(path):
        raise ValueError(
            f"{path!r} is a file; export writes a SavedModel directory and never "
            f"replaces a file. Choose another path. Received: path={path!r}"
        )
    entries = sorted(os.listdir(path))
    if not entries:
        return
    foreign = [e for e in entries if e not in _SAVED_MODEL_ENTRIES]
    if foreign or not _is_saved_model_dir(path):
        shown = ", ".join(foreign[:5] or entries[:5])
        raise ValueError(
            f"{path!r} is a directory holding files that are not a SavedModel "
            f"({shown}); export never deletes them. Choose a new or empty "
            f"directory. Received: path={path!r}"
        )
    if not overwrite:
        raise ValueError(
            f"{path!r} already holds a SavedModel. Pass overwrite=True to replace "
            f"it. Received: path={path!r}, overwrite=False"
        )


def load_model(path, custom_objects=None, safe_mode=True, compile=True):
    """Loads a `.keras` file or a TensorFlow SavedModel directory.

    A `.keras` file goes through `keras.saving.load_model` with `safe_mode`
    on: a file holding a `Lambda` (code) is refused unless the caller passes
    `safe_mode=False`. A SavedModel directory (as written by `export`) comes
    back as a Keras model calling its `serve` endpoint (inference only).

    Args:
        path: a `.keras` file or a SavedModel directory.
        custom_objects: optional dict of extra classes for deserialization.
        safe_mode: keep Keras's safe mode on (default). Only turn it off for
            files you trust.
        compile: whether to compile a `.keras` model after loading.

    Returns:
        A Keras model.

    Raises:
        ValueError: naming `path` when it is missing, truncated, not a Keras
            file, or refused by safe mode.

    Example:

    >>> soup = kh.load_model("saved_models/digits_soup.keras")  # doctest: +SKIP
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"No model file or directory at path={path!r}.")
    if _is_saved_model_dir(path):
        return _load_saved_model(path)
    if os.path.isdir(path):
        raise ValueError(
            f"{path!r} is a directory without a saved_model.pb: not a "
            "SavedModel. Pass a `.keras` file or a SavedModel directory."
        )
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path!r} is not a Keras model file (a `.keras` file is a zip "
            "archive; this one is truncated or of another format)."
        )
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError) as error:
        raise ValueError(f"Cannot read {path!r} as a Keras model: {error}") from None
    if bad is not None:
        raise ValueError(f"{path!r} is corrupted: member {bad!r} fails its CRC.")
    if "config.json" not in names:
        raise ValueError(
            f"{path!r} is a zip archive but not a Keras model file "
            "(no config.json inside)."
        )
    try:
        return keras.saving.load_model(
            path, custom_objects=custom_objects, safe_mode=safe_mode, compile=compile
        )
    except ValueError as error:
        if "safe_mode" in str(error) or "Lambda" in str(error):
            raise ValueError(
                f"Refused to load {path!r}: it holds code (a Lambda layer or a "
                "Python function), which safe mode never runs. Pass "
                "safe_mode=False only if you trust this file."
            ) from error
        raise ValueError(f"Cannot load {path!r}: {error}") from error
    except (TypeError, KeyError, OSError) as error:
        raise ValueError(f"Cannot load {path!r}: {error}") from error


def _load_saved_model(path):
    layer = keras.layers.TFSMLayer(path, call_endpoint="serve")
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    spec = loaded.signatures["serve"].structured_input_signature[1]
    inputs = [
        keras.Input(shape=s.shape[1:], dtype=s.dtype.name, name=name)
        for name, s in sorted(spec.items())
    ]
    outputs = layer(inputs[0] if len(inputs) == 1 else inputs)
    if isinstance(outputs, dict) and len(outputs) == 1:
        outputs = next(iter(outputs.values()))
    return keras.Model(inputs, outputs, name=os.path.basename(path.rstrip("/")))


def _input_signature(model):
    import tensorflow as tf

    inputs = getattr(model, "inputs", None)
    if not inputs:
        raise ValueError(
            "`model` must be built with known inputs (a functional or Sequential "
            f"model called on an Input). Received: model={model.name!r}"
        )
    specs = [tf.TensorSpec(shape=x.shape, dtype=x.dtype, name=x.name) for x in inputs]
    return specs


def export(model, path, overwrite=False):
    """Exports `model` as a TensorFlow SavedModel that serves in inference mode.

    The `serve` endpoint calls `model(x, training=False)`, so augmentation,
    dropout and batch-norm behave as in `model.predict`. The directory is
    written beside `path` and renamed into place.

    Args:
        model: a built functional or Sequential Keras model.
        path: the SavedModel directory to write: new, empty, or (with
            `overwrite=True`) an earlier SavedModel. A file, or a directory
            holding anything else, is refused and left as it was.
        overwrite: bool; replace an existing SavedModel at `path`.

    Returns:
        The path written, as a string.

    Raises:
        ValueError: naming `path` when it is a file, a directory holding other
            files, or an earlier SavedModel without `overwrite=True`; nothing
            is written or deleted then.

    Example:

    >>> kh.export(model, "saved_models/soup_savedmodel")  # doctest: +SKIP
    >>> import tensorflow as tf
    >>> tf.saved_model.load("saved_models/soup_savedmodel").serve(x)  # doctest: +SKIP
    """
    path = os.fspath(path).rstrip("/")
    check_export_target(path, overwrite)
    specs = _input_signature(model)
    archive = keras.export.ExportArchive()
    archive.track(model)
    if len(specs) == 1:
        archive.add_endpoint(
            name="serve",
            fn=lambda x: model(x, training=False),
            input_signature=specs,
        )
    else:
        archive.add_endpoint(
            name="serve",
            fn=lambda *xs: model(list(xs), training=False),
            input_signature=specs,
        )
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-export-", dir=parent)
    try:
        archive.write_out(tmp, verbose=False)
        os.chmod(tmp, _file_mode(path) | 0o111 & ~_umask())  # mkdtemp gives 0o700
        if os.path.lexists(path):
            check_export_target(path, overwrite)  # unchanged while we wrote?
            old = tempfile.mkdtemp(prefix=".old-export-", dir=parent)
            os.rmdir(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def serve(path, x):
    """Runs the `serve` endpoint of a SavedModel written by `export` on `x`.

    Works under any Keras backend (TensorFlow must be installed: a SavedModel
    is TensorFlow's format); a single output comes back as a NumPy array.

    Args:
        path: the SavedModel folder.
        x: the input batch (one array).

    Returns:
        The endpoint's output as a NumPy array.

    Example:

    >>> import tempfile, os
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(
    ...     1, kernel_initializer="ones")])
    >>> folder = os.path.join(tempfile.mkdtemp(), "m")
    >>> kh.saving.serve(kh.export(model, folder), np.float32([[1, 2]])).tolist()
    [[3.0]]
    """
    import numpy as np
    import tensorflow as tf

    # Keep the loaded object alive while its function runs: it owns the
    # variables the function reads.
    artifact = tf.saved_model.load(os.fspath(path))
    outputs = artifact.serve(tf.constant(x))
    if isinstance(outputs, dict):
        outputs = next(iter(outputs.values()))
    return np.asarray(outputs)
