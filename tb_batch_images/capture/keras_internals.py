"""Every use of Keras's private internals (and TensorFlow's), behind one door.

The logger needs a few things Keras does not offer publicly: the structure of a
model's inputs and outputs, its metrics list (the data map's accumulators join it),
the trainer's symbolic build (to strip metadata keys before Keras builds the model on
JAX and PyTorch), the JAX trainer's per-step function builder, and the directory
loader's internals (`tb_batch_images.image_dataset_from_directory`). Each is reached
here and nowhere else (`.importlinter` and ruff's SLF001 rule hold the rest of the
package to it), each with a check of what this Keras offers. Where a piece is missing
or looks different from what the logger knows, the feature that needs it turns off
with one warning naming the Keras version and the feature (`Capabilities`), and
training goes on.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from typing import Any

import keras

KERAS_VERSION = keras.version()


# -- what this Keras offers, checked once when a logger is made ----------------------
def gaps(backend: str) -> list[tuple[str, str]]:
    """(key, message) for each piece this Keras lacks or has changed, naming the
    feature that turns off; empty when every piece is as the logger knows it.
    (The symbolic build is checked where it is wrapped, the JAX state where it is
    read, the metrics list where a model is installed.)"""
    found = []
    if _data_layer_class() is None:
        found.append(
            (
                "keras_data_layer",
                "only Keras's built-in preprocessing layers are recognised as the "
                "start of a model (its base class of preprocessing layers moved)",
            )
        )
    if not _loss_wrapper_has_options():
        found.append(
            (
                "keras_loss_options",
                "from_logits= of the compiled loss is not read: logits are shown as "
                "if they were probabilities",
            )
        )
    return [
        (key, f"on Keras {KERAS_VERSION} ({backend}), {message}")
        for key, message in found
    ]


def _loss_wrapper_has_options() -> bool:
    try:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    except Exception:
        return False
    return loss_option(loss, "from_logits") is True


# -- model structure ---------------------------------------------------------------
def inputs_struct(model: Any) -> Any:
    """The structure of the model's declared inputs (dict, list or one tensor), or
    None where Keras does not say (a subclassed model)."""
    return getattr(model, "_inputs_struct", None)


def outputs_struct(model: Any) -> Any:
    """The structure of the model's declared outputs, in the model's own order."""
    return getattr(model, "_outputs_struct", None)


def flatten_layers(model: Any) -> list[Any]:
    """Every layer of the model, nested ones included (the model itself first)."""
    flatten = getattr(model, "_flatten_layers", None)
    if callable(flatten):
        try:
            return list(flatten())
        except TypeError:
            pass
    layers, stack = [model], list(getattr(model, "layers", []) or [])
    while stack:
        layer = stack.pop(0)
        layers.append(layer)
        stack.extend(getattr(layer, "layers", []) or [])
    return layers


def is_data_layer(layer: Any) -> bool:
    """Whether a layer is one of Keras's preprocessing layers (augmentation,
    `Rescaling`, `Normalization`, `Resizing`, ...)."""
    base = _data_layer_class()
    if base is not None:
        return isinstance(layer, base)
    return isinstance(layer, _PUBLIC_PREPROCESSING)


def _data_layer_class() -> type | None:
    for module_name, class_name in (
        ("keras.src.layers.preprocessing.data_layer", "DataLayer"),
        ("keras.src.layers.preprocessing.tf_data_layer", "TFDataLayer"),
    ):
        try:
            module = __import__(module_name, fromlist=[class_name])
        except ImportError:
            continue
        found = getattr(module, class_name, None)
        if isinstance(found, type):
            return found
    return None


_PUBLIC_PREPROCESSING = tuple(
    getattr(keras.layers, name)
    for name in (
        "Rescaling",
        "Normalization",
        "Resizing",
        "CenterCrop",
        "RandomFlip",
        "RandomRotation",
        "RandomZoom",
        "RandomTranslation",
        "RandomCrop",
        "RandomContrast",
        "RandomBrightness",
    )
    if hasattr(keras.layers, name)
)


def loss_option(loss: Any, option: str) -> Any:
    """An option of a compiled loss (`from_logits`, ...), whether a `Loss` object or a
    function wrapped by Keras (`LossFunctionWrapper` keeps it in `_fn_kwargs`)."""
    kwargs = getattr(loss, "_fn_kwargs", None)
    if isinstance(kwargs, dict) and option in kwargs:
        return kwargs[option]
    return getattr(loss, option, None)


def callback_model(callback: Any) -> Any:
    """The callback's model without `callback.model`'s JAX state sync (~0.2 ms)."""
    model = getattr(callback, "_model", None)
    return callback.model if model is None else model


# -- the model's metrics: where the data map's accumulators live -------------------
def attach_metric(model: Any, metric: Any) -> bool:
    """Adds `metric` to the model's metrics (its variables join Keras's metrics
    state, threaded through every backend's step). False where this Keras keeps no
    such list."""
    metrics = getattr(model, "_metrics", None)
    if not isinstance(metrics, list):
        return False
    metrics.append(metric)
    return True


def detach_metric(model: Any, metric: Any) -> None:
    metrics = getattr(model, "_metrics", None)
    if isinstance(metrics, list) and metric in metrics:
        metrics.remove(metric)


def can_attach_metrics(model: Any) -> bool:
    return isinstance(getattr(model, "_metrics", None), list)


# -- the trainer's symbolic build (JAX and PyTorch build on the first batch) --------
def symbolic_build_owner() -> type | None:
    """The trainer class that defines `_symbolic_build`, found by what it has
    (`Trainer` in Keras 3.15, `BaseTrainer` later), or None."""
    for cls in keras.Model.__mro__:
        if "_symbolic_build" in cls.__dict__:
            return cls
    return None


def wrap_symbolic_build(
    make_wrapper: Callable[[Callable], Callable], marker: str
) -> str | None:
    """Replaces the trainer's `_symbolic_build` with `make_wrapper(original)` once per
    process (`marker` names an attribute the wrapper carries). None when done (or done
    before); otherwise why it could not be."""
    owner = symbolic_build_owner()
    if owner is None:
        return "Keras's trainer has no _symbolic_build"
    original = owner.__dict__["_symbolic_build"]
    if getattr(original, marker, False):
        return None
    parameters = _parameters(original)
    if parameters is None or not {"iterator", "data_batch"} <= set(parameters):
        return (
            "Keras's _symbolic_build takes arguments the logger does not know "
            f"({parameters})"
        )
    wrapper = make_wrapper(original)
    setattr(wrapper, marker, True)
    owner._symbolic_build = wrapper  # noqa: SLF001 - the one door
    return None


def needs_build(model: Any) -> bool:
    """Whether Keras's symbolic build will build something of this model."""
    if not all(getattr(layer, "built", True) for layer in flatten_layers(model)):
        return True
    for part in (
        getattr(model, "_compile_metrics", None),
        getattr(model, "_compile_loss", None),
    ):
        if part is not None and not getattr(part, "built", True):
            return True
    return False


# -- JAX: the state Keras threads through a training (or test) execution ------------
def jax_metric_positions(model: Any, variables: list[Any]) -> list[int] | None:
    """Where each variable's value sits in the metrics part of the JAX state that
    Keras passes to and returns from `train_function`/`test_function` (the last item
    of the state tuple, in `model.metrics_variables` order); None if not all found."""
    order = {id(v): i for i, v in enumerate(model.metrics_variables)}
    positions = [order.get(id(v)) for v in variables]
    return None if None in positions else positions


def jax_metric_values(model: Any, state: Any) -> list[Any] | None:
    """The metrics part of a JAX state tuple, or None where it is not the length of
    `model.metrics_variables` (a trainer this module does not know)."""
    if not isinstance(state, (tuple, list)) or not state:
        return None
    values = state[-1]
    if not isinstance(values, (list, tuple)):
        return None
    if len(values) != len(model.metrics_variables):
        return None
    return list(values)


def jax_state_with_metric_values(state: Any, values: list[Any]) -> Any:
    """The state tuple with its metrics part replaced."""
    return (*state[:-1], type(state[-1])(values))


# -- TensorFlow ----------------------------------------------------------------------
def one_replica_spec(spec: Any) -> Any:
    """A distributed iterator's PerReplicaSpec -> the spec of one replica's share."""
    value_specs = getattr(spec, "_value_specs", None)
    return value_specs[0] if value_specs else spec


# -- the directory loader (tb_batch_images.image_dataset_from_directory) -------------
class DirectoryLoader:
    """Keras's `image_dataset_from_directory`, with two of its steps replaced: the
    listing of the files (`on_index` sees every file, in Keras's order) and the
    building of the dataset from paths (`build`). Everything else (arguments,
    shuffling, splitting, batching) is Keras's own."""

    def __init__(self, dataset_utils: Any, image_dataset_utils: Any):
        self._dataset_utils = dataset_utils
        self._image_dataset_utils = image_dataset_utils

    @classmethod
    def find(cls) -> DirectoryLoader | None:
        """The loader of this Keras, or None where its internals look different."""
        try:
            from keras.src.utils import dataset_utils, image_dataset_utils
        except ImportError:
            return None
        needed = (
            (dataset_utils, "index_directory"),
            (dataset_utils, "labels_to_dataset_tf"),
            (image_dataset_utils, "paths_and_labels_to_dataset"),
            (image_dataset_utils, "_load_image_tf"),
            (image_dataset_utils, "image_dataset_from_directory"),
        )
        if not all(callable(getattr(module, name, None)) for module, name in needed):
            return None
        return cls(dataset_utils, image_dataset_utils)

    def load(
        self,
        on_index: Callable[[list[str]], None],
        build: Callable[..., Any],
        directory: str,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """Runs Keras's loader with the two steps replaced (under `_PATCH_LOCK`:
        Keras looks both names up at call time)."""
        dataset_utils, image_utils = self._dataset_utils, self._image_dataset_utils
        original_index = dataset_utils.index_directory
        original_build = image_utils.paths_and_labels_to_dataset

        def index_directory(*index_args, **index_kwargs):
            paths, labels, class_names = original_index(*index_args, **index_kwargs)
            on_index(list(paths))
            return paths, labels, class_names

        with _PATCH_LOCK:
            dataset_utils.index_directory = index_directory
            image_utils.paths_and_labels_to_dataset = build
            try:
                return image_utils.image_dataset_from_directory(
                    directory, *args, **kwargs
                )
            finally:
                dataset_utils.index_directory = original_index
                image_utils.paths_and_labels_to_dataset = original_build

    def labels_to_dataset(self, labels: Any, label_mode: str, num_classes: int) -> Any:
        return self._dataset_utils.labels_to_dataset_tf(labels, label_mode, num_classes)

    def load_image(self, path: Any, *load_args: Any) -> Any:
        """One image, decoded and resized as Keras's loader does it."""
        return self._image_dataset_utils._load_image_tf(path, *load_args)


_PATCH_LOCK = threading.Lock()


def _parameters(function: Callable) -> list[str] | None:
    try:
        return list(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return None
