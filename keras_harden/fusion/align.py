"""`align`: permute a model's hidden units to line up with another model's."""

import dataclasses

import keras
import numpy as np

from keras_harden._validation import check_int
from keras_harden.fusion._common import (
    check_models,
    clone_with_weights,
    first_leaf,
    is_float,
    iterate_batches,
    to_numpy,
    weight_slots,
)
from keras_harden.fusion.compat import check_compatible

__all__ = ["align"]

FIXED = 0  # the group of every channel axis that keeps its order

# Layers that act on each channel alike (or on each channel alone, with no
# weights): permuting their input's channels permutes their output's.
_PASS_THROUGH = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.Softmax,
    keras.layers.Dropout,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
    keras.layers.ActivityRegularization,
    keras.layers.Identity,
    keras.layers.Masking,
    keras.layers.UnitNormalization,
)
# The same, acting on spatial axes: channels must come last.
_SPATIAL = (
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.MaxPooling3D,
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.AveragePooling3D,
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalAveragePooling3D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalMaxPooling3D,
    keras.layers.ZeroPadding1D,
    keras.layers.ZeroPadding2D,
    keras.layers.ZeroPadding3D,
    keras.layers.Cropping1D,
    keras.layers.Cropping2D,
    keras.layers.Cropping3D,
    keras.layers.UpSampling1D,
    keras.layers.UpSampling2D,
    keras.layers.UpSampling3D,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D,
)
_MERGE = (
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.Average,
    keras.layers.Maximum,
    keras.layers.Minimum,
)
_CONV = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_CONV_TRANSPOSE = (
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
)
_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
SUPPORTED = (
    "Dense, Conv1D/2D/3D, Conv*Transpose, DepthwiseConv1D/2D (depth_multiplier=1), "
    "Embedding, BatchNormalization, LayerNormalization, RMSNormalization, PReLU, "
    "Add/Subtract/Multiply/Average/Maximum/Minimum, Flatten, pooling, padding, "
    "cropping, up-sampling, activations, dropout and noise layers, nested "
    "functional or Sequential models (channels last)"
)


@dataclasses.dataclass
class Entry:
    """One variable to permute: along each `(axis, group, repeat)` of `axes`
    (an axis of length `repeat * size` indexed `r * size + unit`). `match`:
    whether weight matching compares it (batch-norm statistics are permuted
    but not compared: they are not parameters, and their positive values
    would pull large variances together)."""

    layer: object
    variable: object
    axes: list
    match: bool = True


@dataclasses.dataclass
class Mixing:
    """A layer that makes new units (Dense, Conv, ...): its output group, and
    whether a batch norm normalises its output (through per-channel layers)."""

    layer: object
    group: int
    top_level: bool
    normalized: bool = False


class Analysis:
    """Which channel axes of a model must share one permutation.

    Walks the model's functional graph (from `get_config()`: each layer's
    inbound tensors) and joins channel axes into groups with a union-find:
    a Dense or Conv layer starts a new group of units, per-channel layers
    (activations, batch norm, pooling...) keep their input's, and `Add` and
    the other element-wise merges join their inputs' groups into one. The
    model's inputs and outputs, and whatever they are joined to, keep their
    order (group `FIXED`).
    """

    def __init__(self, model):
        self.model = model
        self.parent = [FIXED]
        self.sizes = [None]
        self.entries = []
        self.mixing = []
        self.opaque = []  # (layer, input groups) of layers we cannot see into
        self.probes = []  # (layer, group, repeat) of top-level single-call layers
        self.layer_spaces = {}  # id(layer) -> (input space, output group)
        self.opaque_names = set()  # (path) of the layers whose outputs are fixed
        self._top = True
        inputs = [(FIXED, 1, None)] * len(_functional(model).inputs)
        outputs = self._walk(model, inputs, path="", top=True)
        for group, _, _ in outputs:
            self._union(group, FIXED, model)
        for layer, groups in self.opaque:
            if any(self.find(g) != FIXED for g in groups):
                raise ValueError(
                    f"`align` cannot permute the units that layer {layer.name!r} "
                    f"({type(layer).__name__}) takes: it mixes or reorders "
                    f"channels in a way align does not know. Supported: "
                    f"{SUPPORTED}. Received: model={model.name!r}"
                )
        roots = sorted({self.find(g) for g in range(1, len(self.parent))} - {FIXED})
        self.index = {root: i for i, root in enumerate(roots)}
        self.group_sizes = [self.sizes[root] for root in roots]

    # -- union-find over channel groups ---------------------------------------

    def _new(self, size):
        self.parent.append(len(self.parent))
        self.sizes.append(size)
        return len(self.parent) - 1

    def find(self, group):
        while self.parent[group] != group:
            self.parent[group] = self.parent[self.parent[group]]
            group = self.parent[group]
        return group

    def _union(self, a, b, layer):
        a, b = self.find(a), self.find(b)
        if a == b:
            return a
        if FIXED in (a, b):
            self.parent[a] = self.parent[b] = FIXED
            return FIXED
        if self.sizes[a] != self.sizes[b]:
            raise ValueError(
                f"`align` cannot join channel groups of sizes {self.sizes[a]} "
                f"and {self.sizes[b]} at layer {layer.name!r}. "
                f"Received: model={self.model.name!r}"
            )
        self.parent[b] = a
        return a

    def group(self, group):
        """The index of `group`'s permutation, or None when it is fixed."""
        return self.index.get(self.find(group))

    # -- the walk ---------------------------------------------------------------

    def _walk(self, model, input_spaces, path, top):
        self._top = top
        graph = _functional(model)
        config = graph.get_config()
        spaces = {}
        for key, space in zip(
            _tensor_list(config["input_layers"]), input_spaces, strict=True
        ):
            spaces[key] = space
        for layer_config in config["layers"]:
            name = layer_config["name"]
            if layer_config["class_name"] == "InputLayer":
                continue
            layer = graph.get_layer(name)
            nodes = layer_config["inbound_nodes"]
            for node_index, node in enumerate(nodes):
                tensors = list(_keras_tensors(node))
                inputs = [self._space(spaces, key, path) for key, _ in tensors]
                shapes = [shape for _, shape in tensors]
                outputs = self._layer(
                    layer, inputs, shapes, f"{path}{name}", len(nodes) > 1
                )
                self._top = top
                for index, space in enumerate(outputs):
                    spaces[(name, node_index, index)] = space
                if top and len(nodes) == 1 and len(outputs) == 1:
                    if not isinstance(layer, keras.Model):
                        self.probes.append((layer, outputs[0][0], outputs[0][1]))
        return [
            self._space(spaces, key, path)
            for key in _tensor_list(config["output_layers"])
        ]

    def _space(self, spaces, key, path):
        """The space of a tensor: an opaque layer's outputs are all fixed."""
        if key not in spaces and f"{path}{key[0]}" in self.opaque_names:
            return (FIXED, 1, None)
        return spaces[key]

    def _layer(self, layer, inputs, shapes, path, shared):
        if isinstance(layer, keras.Model):
            return self._walk(layer, inputs, f"{path}/", top=False)
        if isinstance(layer, _MERGE):
            group, repeat, _ = inputs[0]
            for other, other_repeat, _ in inputs[1:]:
                if other_repeat != repeat:
                    self._refuse(layer, "its inputs lay out their channels differently")
                group = self._union(group, other, layer)
            return [(group, repeat, None)]
        if isinstance(layer, keras.layers.Flatten):
            self._channels_last(layer)
            group, repeat, _ = inputs[0]
            inner = shapes[0][1:-1]
            if any(d is None for d in inner):
                self._refuse(layer, "its input has dimensions of unknown size")
            return [(group, repeat * int(np.prod(inner, dtype="int64")), None)]
        if isinstance(layer, _SPATIAL):
            self._channels_last(layer)
            return [inputs[0]]
        if isinstance(layer, _PASS_THROUGH) or _scalar_rescaling(layer):
            self._check_weights(layer, [])
            return [inputs[0]]
        if isinstance(layer, keras.layers.BatchNormalization):
            return [self._batchnorm(layer, inputs[0], shapes[0], shared)]
        if isinstance(
            layer, (keras.layers.LayerNormalization, keras.layers.RMSNormalization)
        ):
            return [self._layernorm(layer, inputs[0], shapes[0], shared)]
        if isinstance(layer, keras.layers.PReLU):
            group, repeat, _ = inputs[0]
            variables = [layer.alpha]
            if not shared:
                axes = []
                if layer.alpha.shape[-1] == shapes[0][-1]:
                    axes = [(len(layer.alpha.shape) - 1, group, repeat)]
                self._register(layer, variables, [axes])
            return [inputs[0]]
        if isinstance(layer, _DEPTHWISE):
            return [self._depthwise(layer, inputs[0], shared)]
        if isinstance(layer, (keras.layers.Dense, *_CONV, *_CONV_TRANSPOSE)):
            return [self._mixing(layer, inputs[0], shared)]
        if isinstance(layer, keras.layers.Embedding):
            return [self._mixing(layer, None, shared)]
        # Anything else keeps its inputs' and outputs' order: fine when its
        # inputs are never permuted (checked once every group is known) and it
        # holds nothing trainable (its own units would stay unaligned).
        if layer.trainable_weights:
            self._refuse(layer, "it holds trainable weights align cannot permute")
        self.opaque.append((layer, [group for group, _, _ in inputs]))
        self.opaque_names.add(path)
        return []

    def _register(self, layer, variables, axes_list):
        self._check_weights(layer, variables)
        for variable, axes in zip(variables, axes_list, strict=True):
            self.entries.append(Entry(layer, variable, list(axes)))

    def _mixing(self, layer, space, shared):
        if isinstance(layer, (*_CONV, *_CONV_TRANSPOSE)):
            self._channels_last(layer)
            if getattr(layer, "groups", 1) != 1:
                self._refuse(layer, "grouped convolutions are not supported")
        if id(layer) in self.layer_spaces:  # a shared layer: one permutation
            first, out = self.layer_spaces[id(layer)]
            if space is not None:
                if space[1] != first[1]:
                    self._refuse(layer, "its calls lay out their inputs differently")
                self._union(space[0], first[0], layer)
            return (out, 1, layer)
        if isinstance(layer, keras.layers.Embedding):
            out = self._new(layer.embeddings.shape[-1])
            self._register(layer, [layer.embeddings], [[(1, out, 1)]])
            self.layer_spaces[id(layer)] = (space, out)
            return (out, 1, None)
        group, repeat, _ = space
        kernel = layer.kernel
        rank = len(kernel.shape)
        out = self._new(kernel.shape[-2 if isinstance(layer, _CONV_TRANSPOSE) else -1])
        if isinstance(layer, keras.layers.Dense):
            axes = [(0, group, repeat), (1, out, 1)]
        else:
            if repeat != 1:
                self._refuse(layer, "its input channels are not the last axis alone")
            in_axis, out_axis = rank - 2, rank - 1
            if isinstance(layer, _CONV_TRANSPOSE):
                in_axis, out_axis = out_axis, in_axis
            axes = [(in_axis, group, 1), (out_axis, out, 1)]
        variables, axes_list = [kernel], [axes]
        if layer.bias is not None:
            variables.append(layer.bias)
            axes_list.append([(0, out, 1)])
        self._register(layer, variables, axes_list)
        self.layer_spaces[id(layer)] = (space, out)
        self.mixing.append(Mixing(layer, out, top_level=self._top and not shared))
        return (out, 1, layer)

    def _depthwise(self, layer, space, shared):
        self._channels_last(layer)
        if layer.depth_multiplier != 1:
            self._refuse(layer, "a depth multiplier other than 1 is not supported")
        group, repeat, _ = space
        if not shared:
            rank = len(layer.kernel.shape)
            variables, axes_list = [layer.kernel], [[(rank - 2, group, repeat)]]
            if layer.bias is not None:
                variables.append(layer.bias)
                axes_list.append([(0, group, repeat)])
            self._register(layer, variables, axes_list)
        return (group, repeat, None)

    def _batchnorm(self, layer, space, shape, shared):
        group, repeat, producer = space
        if layer.axis not in (-1, len(shape) - 1):
            self._refuse(layer, "it normalises an axis other than the last")
        if producer is not None:
            for mixing in self.mixing:
                if mixing.layer is producer:
                    mixing.normalized = True
        if not shared:
            candidates = (
                layer.gamma,
                layer.beta,
                layer.moving_mean,
                layer.moving_variance,
            )
            variables = [v for v in candidates if v is not None]
            self._register(layer, variables, [[(0, group, repeat)]] * len(variables))
            statistics = {id(layer.moving_mean), id(layer.moving_variance)}
            for entry in self.entries[-len(variables) :]:
                entry.match = id(entry.variable) not in statistics
        return (group, repeat, None)

    def _layernorm(self, layer, space, shape, shared):
        group, repeat, _ = space
        rank = len(shape)
        axes = sorted(a % rank for a in keras.tree.flatten(layer.axis))
        if isinstance(layer, keras.layers.RMSNormalization):
            variables = [layer.scale]
        else:
            variables = [v for v in (layer.gamma, layer.beta) if v is not None]
        if not shared:
            permuted = []
            if rank - 1 in axes:  # the parameters' last axis is the channels'
                permuted = [(len(axes) - 1, group, repeat)]
            self._register(layer, variables, [permuted] * len(variables))
        return (group, repeat, None)

    def _check_weights(self, layer, variables):
        """Every float variable of `layer` must be one we permute."""
        known = {id(v) for v in variables}
        for variable in layer.weights:
            if is_float(variable) and id(variable) not in known:
                self._refuse(
                    layer, f"it holds a variable align does not know: {variable.path}"
                )

    def _channels_last(self, layer):
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            self._refuse(layer, "only channels_last data is supported")

    def _refuse(self, layer, why):
        raise ValueError(
            f"`align` cannot permute layer {layer.name!r} ({type(layer).__name__}): "
            f"{why}. Supported: {SUPPORTED}. Received: model={self.model.name!r}"
        )

    # -- what two analyses share --------------------------------------------------

    def signature(self):
        """What must agree between two models for their groups to correspond."""
        return (
            tuple(self.group_sizes),
            tuple(
                (
                    type(e.layer).__name__,
                    tuple(e.variable.shape),
                    tuple((axis, self.group(g), r) for axis, g, r in e.axes),
                )
                for e in self.entries
            ),
        )

    def axes(self, entry):
        """`entry`'s permuted axes as `(axis, group index, repeat)`."""
        return [
            (axis, self.group(g), r)
            for axis, g, r in entry.axes
            if self.group(g) is not None
        ]


def _functional(model):
    """`model` as a functional graph: a Sequential's inner graph is rebuilt
    as a `keras.Model` over the same layers; a subclassed model is refused."""
    if isinstance(model, keras.Sequential):
        return keras.Model(model.inputs, model.outputs, name=model.name)
    config = model.get_config() if hasattr(model, "get_config") else None
    if not isinstance(config, dict) or "input_layers" not in config:
        raise ValueError(
            f"`align` needs a functional or Sequential model to follow its graph; "
            f"{model.name!r} ({type(model).__name__}) is subclassed. "
            f"Received: model={model.name!r}"
        )
    return model


def _tensor_list(value):
    """`[(layer name, node index, tensor index), ...]` from a config's
    `input_layers` / `output_layers` (a single triple or a nested list)."""
    if len(value) == 3 and isinstance(value[0], str):
        return [tuple(value)]
    return [key for item in value for key in _tensor_list(item)]


def _keras_tensors(value):
    """Yields `(key, shape)` for each serialized Keras tensor in a node's
    `args` and `kwargs`, in order."""
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            config = value["config"]
            yield tuple(config["keras_history"]), tuple(config["shape"])
            return
        for item in value.values():
            yield from _keras_tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _keras_tensors(item)


def _scalar_rescaling(layer):
    return isinstance(layer, keras.layers.Rescaling) and all(
        np.ndim(value) == 0 for value in (layer.scale, layer.offset)
    )


def analyse_pair(reference, model):
    """The analyses of two models of one architecture, checked to agree."""
    check_compatible([reference, model])
    ref, other = Analysis(reference), Analysis(model)
    if ref.signature() != other.signature():
        raise ValueError(
            f"{reference.name!r} and {model.name!r} hold the same weights but "
            "their graphs join channels differently, so their units cannot be "
            f"matched. Received: model={model.name!r}"
        )
    return ref, other


# -- permutations -----------------------------------------------------------------


def expand(permutation, repeat):
    """`permutation` of `size` units, applied to an axis of `repeat * size`
    indexed `r * size + unit` (a flattened channels-last tensor)."""
    permutation = np.asarray(permutation)
    size = len(permutation)
    return (np.arange(repeat)[:, None] * size + permutation[None, :]).ravel()


def permute(value, axes, permutations, skip=None):
    """`value` with `permutations[group]` applied along each `(axis, group,
    repeat)` of `axes` (the `skip`-th left alone): new unit `i` = old unit
    `permutation[i]`."""
    for position, (axis, group, repeat) in enumerate(axes):
        if position != skip:
            value = np.take(value, expand(permutations[group], repeat), axis=axis)
    return value


def _units_first(value, axis, repeat):
    """`value` as a `(units, everything else)` matrix, for the units along
    `axis` (of length `repeat * units`)."""
    shape = value.shape
    value = value.reshape(shape[:axis] + (repeat, -1) + shape[axis + 1 :])
    value = np.moveaxis(value, axis + 1, 0)
    return value.reshape(value.shape[0], -1)


def weight_matching(
    reference_values, model_values, axes_list, sizes, permutations, free, rng, rounds
):
    """Git Re-Basin's weight matching: coordinate descent over the `free`
    groups, each step the linear assignment that best lines up every weight
    touching the group (the other groups held at their current permutation).
    Updates `permutations` in place; returns the rounds run."""
    from scipy.optimize import linear_sum_assignment

    for round_ in range(1, rounds + 1):
        improved = False
        for group in rng.permutation(free):
            size = sizes[group]
            similarity = np.zeros((size, size))
            for a, b, axes in zip(
                reference_values, model_values, axes_list, strict=True
            ):
                for position, (axis, g, repeat) in enumerate(axes):
                    if g != group:
                        continue
                    b_other = permute(b, axes, permutations, skip=position)
                    similarity += _units_first(a, axis, repeat) @ (
                        _units_first(b_other, axis, repeat).T
                    )
            _, columns = linear_sum_assignment(similarity, maximize=True)
            units = np.arange(size)
            old = similarity[units, permutations[group]].sum()
            new = similarity[units, columns].sum()
            if new > old + 1e-12 * max(1.0, abs(old)):
                permutations[group] = columns
                improved = True
        if not improved:
            return round_
    return rounds


class _Moments:
    """Running sums for the correlation of two sets of units."""

    def __init__(self, size):
        self.n = 0
        self.sum_a = np.zeros(size)
        self.sum_b = np.zeros(size)
        self.square_a = np.zeros(size)
        self.square_b = np.zeros(size)
        self.cross = np.zeros((size, size))

    def add(self, a, b):
        self.n += a.shape[0]
        self.sum_a += a.sum(0, dtype="float64")
        self.sum_b += b.sum(0, dtype="float64")
        self.square_a += (a * a).sum(0, dtype="float64")
        self.square_b += (b * b).sum(0, dtype="float64")
        self.cross += a.T @ b  # one batch in float32, summed in float64

    def correlation(self):
        mean_a, mean_b = self.sum_a / self.n, self.sum_b / self.n
        std_a = np.sqrt(np.maximum(self.square_a / self.n - mean_a**2, 0.0))
        std_b = np.sqrt(np.maximum(self.square_b / self.n - mean_b**2, 0.0))
        covariance = self.cross / self.n - np.outer(mean_a, mean_b)
        return covariance / (np.outer(std_a, std_b) + 1e-8)


def activation_matching(reference, model, ref, other, data, steps, batch_size):
    """Permutations maximising the summed correlation of each group's hidden
    activations (every top-level layer output in the group) over `data`.
    Returns `{group: permutation}` for the groups with activations."""
    from scipy.optimize import linear_sum_assignment

    probes = [
        (i, ref.group(g))
        for i, (_, g, _) in enumerate(ref.probes)
        if ref.group(g) is not None
    ]
    if not probes:
        return {}
    features = [
        keras.Model(m.inputs, [analysis.probes[i][0].output for i, _ in probes])
        for m, analysis in ((reference, ref), (model, other))
    ]
    moments = {}
    seen = 0
    for x, _ in iterate_batches(data, batch_size, steps):
        if int(first_leaf(x).shape[0]) == 0:
            continue
        seen += 1
        outputs = [keras.tree.flatten(f.predict_on_batch(x)) for f in features]
        for (_, group), a, b in zip(probes, outputs[0], outputs[1], strict=True):
            # units last; every other position (spatial, or a flattened
            # axis's r in r * size + unit) is one more sample
            size = ref.group_sizes[group]
            a = np.asarray(a, "float32").reshape(-1, size)
            b = np.asarray(b, "float32").reshape(-1, size)
            moments.setdefault(group, _Moments(size)).add(a, b)
    if not seen:
        raise ValueError(f"`data` yielded no examples. Received: data={data!r}")
    found = {}
    for group, moment in moments.items():
        _, columns = linear_sum_assignment(moment.correlation(), maximize=True)
        found[group] = columns
    return found


def find_permutations(
    reference,
    model,
    ref,
    other,
    data=None,
    rounds=100,
    seed=0,
    steps=None,
    batch_size=128,
):
    """One permutation per group of `other` that best matches `ref`."""
    sizes = ref.group_sizes
    permutations = [np.arange(size) for size in sizes]
    free = list(range(len(sizes)))
    if data is not None:
        found = activation_matching(
            reference, model, ref, other, data, steps, batch_size
        )
        for group, permutation in found.items():
            permutations[group] = permutation
        free = [g for g in free if g not in found]
    if free:
        axes_list = [ref.axes(e) for e in ref.entries]
        keep = [i for i, axes in enumerate(axes_list) if axes and ref.entries[i].match]
        reference_values = [_float64(ref.entries[i].variable) for i in keep]
        model_values = [_float64(other.entries[i].variable) for i in keep]
        weight_matching(
            reference_values,
            model_values,
            [axes_list[i] for i in keep],
            sizes,
            permutations,
            free,
            np.random.default_rng(seed),
            rounds,
        )
    return permutations


def _float64(variable):
    return to_numpy(variable.value).astype("float64")


def apply_permutations(model, analysis, permutations):
    """A new model: a copy of `model` with its units permuted."""
    values = {}
    for entry in analysis.entries:
        axes = analysis.axes(entry)
        if axes:
            value = to_numpy(entry.variable.value)
            values[id(entry.variable)] = permute(value, axes, permutations)
    result = clone_with_weights(model)
    for (_, _, target), (_, _, source) in zip(
        weight_slots(result), weight_slots(model), strict=True
    ):
        if id(source) in values:
            target.assign(values[id(source)])
    return result


def align(reference, model, data=None, rounds=100, seed=0, steps=None, batch_size=128):
    """Returns a copy of `model` with its hidden units permuted to match
    `reference`'s.

    Two networks trained from different random starts may compute much the
    same features, but in a different order: unit 3 of one is unit 17 of the
    other. Averaging their weights then mixes unrelated units and the
    average is poor. Permuting a hidden layer's units (its kernel's output
    columns and bias, the next layer's kernel rows, and every per-channel
    weight in between) leaves the function the network computes unchanged,
    so `model` can be permuted to line up with `reference` first; the result
    computes the same outputs as `model` (to float rounding) and averages
    with `reference` far better.

    How the units are matched:

    - Without `data`, **weight matching** (Ainsworth et al. 2023): for each
      group of units, the permutation that maximises the summed inner
      product of the two models' weights that touch the group (a linear
      assignment, solved exactly by `scipy.optimize.linear_sum_assignment`),
      the other groups held fixed; repeated over the groups in random order
      (`seed`) until no group changes, at most `rounds` times.
    - With `data`, **activation matching**: for each group, the assignment
      that maximises the correlation of the two models' unit activations
      over `data` (every layer output in the group, each spatial position a
      sample); groups with no top-level layer output (inside nested models)
      fall back to weight matching.

    What shares one permutation is found by walking the model's graph: a
    Dense, Conv or Embedding layer starts a group of units; layers acting
    per channel (activations, dropout, batch norm, layer norm, pooling,
    padding, depthwise convolutions) carry their input's; `Add` and the other
    element-wise merges join their inputs' groups into one (a residual
    stream is one group); `Flatten` after a convolution spreads the group
    over every spatial position (unit `c` at position `p` is flattened
    index `p * channels + c`). The inputs and outputs keep their order, and
    so does any group joined to them. Layer normalisation's gamma and beta
    are permuted with the units: its mean and variance over the features
    do not depend on their order.

    Functional and Sequential models are supported, nested ones included;
    channels must come last. A layer that would need permuting but cannot
    be (a recurrent or attention layer, `Concatenate`, `Reshape`, a grouped
    convolution, a custom layer with weights) raises a `ValueError` naming
    it; weightless layers align does not know are fine where the channels
    reaching them are never permuted (preprocessing at the input).

    Args:
        reference: the built Keras model to line up with.
        model: a built Keras model of the same architecture (layer names may
            differ).
        data: optional inputs for activation matching (arrays, an `(x, y)`
            tuple, a `tf.data.Dataset` or an iterable of batches).
        rounds: at most this many rounds of weight matching.
        seed: int seed of the order in which weight matching visits groups.
        steps: at most this many batches of `data`.
        batch_size: batch size used to split array `data`.

    Returns:
        A new Keras model: `model`'s architecture and function with its
        units reordered (compiled like `model` when it was compiled). Neither
        input model is modified.

    Example:

    >>> import numpy as np, keras, keras_harden as kh
    >>> def mlp():
    ...     return keras.Sequential([keras.Input((4,)),
    ...         keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])
    >>> a, b = mlp(), mlp()
    >>> b_aligned = kh.fusion.align(a, b)
    >>> x = np.random.default_rng(0).normal(size=(5, 4))
    >>> bool(np.allclose(b_aligned.predict(x, verbose=0),
    ...                  b.predict(x, verbose=0), atol=1e-5))
    True

    References:
        Ainsworth, Hayase and Srinivasa, "Git Re-Basin: Merging Models
        modulo Permutation Symmetries", ICLR 2023;
        github.com/samuela/git-re-basin. Entezari et al., "The Role of
        Permutation Invariance in Linear Mode Connectivity of Neural
        Networks", ICLR 2022.
    """
    reference = check_models(reference, name="reference")[0]
    model = check_models(model, name="model")[0]
    check_int("rounds", rounds, minimum=1)
    check_int("seed", seed)
    ref, other = analyse_pair(reference, model)
    permutations = find_permutations(
        reference, model, ref, other, data, rounds, seed, steps, batch_size
    )
    return apply_permutations(model, other, permutations)
