"""Every ```python block of README.md and docs/*.md runs as written.

The blocks of one file run in order in one namespace (later blocks use the
names earlier ones made), after a small prelude that defines the names the
text leaves free (tiny digits models, a few fine-tunes, `x`, `y`, ...), in a
temporary working directory, so the files they write land there.

A block right after `<!-- not-run: reason -->` is only compiled; the blocks
marked so are listed in `NOT_RUN`. A block that needs TensorFlow itself
(`TF_ONLY`: tf.data, SavedModel export, `seed_search`, TensorBoard logs,
`kh.distribute`) is `tf_only`; one that trains for seconds (`SLOW`) is
`slow`. Selecting a single block (`-k`) runs it without the blocks before it.
"""

import os
import pathlib
import re
import textwrap

import keras
import pytest

import keras_harden as kh
from tests.toolkit import ROOT

FILES = ["README.md"] + sorted(
    os.path.relpath(path, ROOT) for path in pathlib.Path(ROOT, "docs").glob("*.md")
)
FENCE = re.compile(r"^(\s*)```python\s*$")
NOT_RUN_MARK = re.compile(r"^\s*<!--\s*not-run:\s*(.+?)\s*-->\s*$")
TF_ONLY = re.compile(
    r"\btf\.|\bds\.|kh\.export\(|seed_search\(|log_dir=|kh\.distribute\."
)
# (file, a line of the block): blocks that train for seconds
SLOW = [
    ("README.md", "StochasticWeightAveraging(start_epoch=15"),
    ("README.md", "seed_search("),
    ("README.md", "kh.harden("),
    ("docs/search.md", "kh.harden("),
    ("docs/search.md", "kh.lr_range_test("),
    ("docs/robust.md", "report = robust.evaluate("),
    ("README.md", "kh.robust.AdversarialTraining("),
    ("docs/robust.md", "robust.AdversarialTraining("),
    ("docs/initializers.md", "seed_search("),
    ("docs/initializers.md", "for _ in range(64)"),
]
# (file, a line of the block): the blocks that cannot run here, and why
NOT_RUN = [
    ("README.md", "MultiWorkerMirroredStrategy()"),  # needs TF_CONFIG per worker
]


def extract(path):
    """`(line, code, not_run_reason)` for each ```python block of `path`."""
    lines = pathlib.Path(ROOT, path).read_text().splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        match = FENCE.match(lines[index])
        if match:
            end = index + 1
            while not lines[end].strip().startswith("```"):
                end += 1
            previous = next(
                (line for line in reversed(lines[:index]) if line.strip()), ""
            )
            reason = NOT_RUN_MARK.match(previous)
            code = textwrap.dedent("\n".join(lines[index + 1 : end]))
            blocks.append((index + 2, code, reason.group(1) if reason else None))
            index = end
        index += 1
    return blocks


BLOCKS = [(path, *block) for path in FILES for block in extract(path)]


def _params():
    for path, line, code, reason in BLOCKS:
        if reason is not None:
            continue
        marks = []
        if TF_ONLY.search(code):
            marks.append(pytest.mark.tf_only)
        if any(path == p and snippet in code for p, snippet in SLOW):
            marks.append(pytest.mark.slow)
        yield pytest.param(path, line, code, marks=marks, id=f"{path}:{line}")


# -- the free names of each file -----------------------------------------------


def _digits(image_size=8, channels=1, n=256, n_val=128):
    (x, y), _ = kh.data.load_digits(image_size=image_size, channels=channels)
    return x[:n], y[:n], x[n : n + n_val], y[n : n + n_val]


LOGITS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _train(model, x, y, seed, epochs=1, loss="sparse_categorical_crossentropy"):
    keras.utils.set_random_seed(seed)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=loss)
    if epochs:
        model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


def _fine_tunes(build, x, y, loss="sparse_categorical_crossentropy", count=3):
    """`(start, tunes)`: `count` fine-tunes (one epoch, their own seeds) of
    one trained start, trained in one model (traced once) and copied out."""
    model = _train(build(), x, y, seed=0, epochs=2, loss=loss)
    start = model.get_weights()
    start_model = build()
    start_model.set_weights(start)
    tunes = []
    for seed in range(1, count + 1):
        model.set_weights(start)
        keras.utils.set_random_seed(seed)
        model.fit(x, y, epochs=1, batch_size=32, verbose=0)
        tune = build()
        tune.set_weights(model.get_weights())
        tunes.append(tune)
    return start_model, tunes


def _readme():
    x, y, x_val, y_val = _digits(image_size=64, channels=3, n=128, n_val=64)

    def conv_net(batchnorm=False):
        layers = [
            keras.Input((64, 64, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(8, 3, strides=4, activation="relu"),
        ]
        if batchnorm:
            layers.append(keras.layers.BatchNormalization())
        layers += [
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10, activation="softmax", name="fc"),
        ]
        return keras.Sequential(layers)

    base, tunes = _fine_tunes(conv_net, x, y)
    names = dict(
        x=x, y=y, x_train=x, y_train=y, x_val=x_val, y_val=y_val,
        model=conv_net(), trained=tunes[0], tunes=tunes,
        base=base,
        m1=tunes[0], m2=tunes[1], m3=tunes[2],
        models=[*tunes, _train(conv_net(batchnorm=True), x, y, seed=4)],
        backbone=keras.Sequential(conv_net().layers[1:]),
        build_model=lambda seed: _train(conv_net(), x, y, seed, epochs=0),
    )  # fmt: skip
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        names["ds"] = tf.data.Dataset.from_tensor_slices((x, y))
    return names


def _augment():
    x, y, _, _ = _digits(image_size=32, channels=3, n=64)
    model = keras.Sequential(
        [
            keras.Input((160, 160, 3)),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ]
    )
    names = {"model": model}
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        names["ds"] = tf.data.Dataset.from_tensor_slices((x, y))
    return names


def _small_net(input_shape=(8, 8, 1), batchnorm=False, softmax=False):
    layers = [
        keras.Input(input_shape),
        keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(8, 3, activation="relu"),
    ]
    if batchnorm:
        layers.append(keras.layers.BatchNormalization())
    layers += [
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax" if softmax else None),
    ]
    return keras.Sequential(layers)


def _diagnostics():
    x, y, _, _ = _digits(n=320)
    model = _train(_small_net(softmax=True), x, y, seed=0, epochs=0)  # compiled
    return {"x": x, "y": y, "model": model}


def _search():
    x, y, _, _ = _digits(n=320)
    return {"x": x, "y": y, "model": _small_net(softmax=True)}


def _fusion():
    x, y, x_val, y_val = _digits(n=128, n_val=64)

    def build():
        return _small_net(batchnorm=True)

    return {
        "models": _fine_tunes(build, x, y, loss=LOGITS)[1],
        "model": _train(build(), x, y, seed=5, loss=LOGITS),
        "x_train": x,
        "y_train": y,
        "x_val": x_val,
        "y_val": y_val,
    }


def _initializers():
    x, y, _, _ = _digits()
    x_train = x.reshape(len(x), -1) / 255.0

    def make_model(kernel_initializer="glorot_uniform"):
        return keras.Sequential(
            [
                keras.Input((64,)),
                keras.layers.Dense(32, "relu", kernel_initializer=kernel_initializer),
                keras.layers.Dense(10, kernel_initializer=kernel_initializer),
            ]
        )

    return {
        "x": keras.Input((32, 32, 16)),
        "c": 64,
        "x_train": x_train,
        "y_train": y,
        "model": make_model(),
        "make_model": make_model,
    }


def _optimizers():
    return {"model": _small_net(softmax=True)}


PRELUDES = {
    "README.md": _readme,
    "docs/augment.md": _augment,
    "docs/diagnostics.md": _diagnostics,
    "docs/fusion.md": _fusion,
    "docs/initializers.md": _initializers,
    "docs/optimizers.md": _optimizers,
    "docs/search.md": _search,
}


@pytest.fixture(scope="module")
def namespaces(tmp_path_factory):
    """`{file: (namespace, working directory)}`, each made on the file's
    first block: a temporary folder per file."""
    folder = tmp_path_factory.mktemp("docs")
    before = os.getcwd()
    try:
        yield {"": folder}
    finally:
        os.chdir(before)


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Overrides the suite's per-test `clear_session`: the blocks of a file
    share their models from test to test."""
    yield


@pytest.mark.parametrize("path, line, code", list(_params()))
def test_block_runs(path, line, code, namespaces):
    if path not in namespaces:
        names = PRELUDES.get(path, dict)()
        directory = namespaces[""] / path.replace("/", "_")
        directory.mkdir()
        namespaces[path] = ({"__name__": f"docs:{path}", **names}, directory)
    namespace, directory = namespaces[path]
    os.chdir(directory)
    # padded so that tracebacks give the line numbers of the markdown file
    exec(compile("\n" * (line - 1) + code, path, "exec"), namespace)


def test_not_run_blocks_are_the_known_ones():
    marked = [(path, code) for path, _, code, reason in BLOCKS if reason]
    assert len(marked) == len(NOT_RUN)
    for (path, code), (expected_path, snippet) in zip(marked, NOT_RUN, strict=True):
        assert path == expected_path and snippet in code
        compile(code, path, "exec")  # still valid Python


def test_every_prelude_has_its_file():
    assert set(PRELUDES) <= set(FILES)
