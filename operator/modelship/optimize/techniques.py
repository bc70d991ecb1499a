"""The optimization techniques, each a real TFMOT / TFLite call (low-rank SVD is hand-written: TFMOT has none).

Every function takes a tf-keras model and returns a new one; the input model is never modified.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..api.optimization import (
    CentroidInit,
    ClusterParams,
    FineTune,
    LowRankParams,
    Metric,
    MetricType,
    PruneParams,
    PruningSchedule,
)
from .data import Dataset
from .errors import OptimizeError, first_line
from .signature import Features, keras_inputs, rows
from .tfenv import TF

Array = np.ndarray[Any, Any]


@dataclass
class Result:
    """A model after a technique, with what the report should say about it."""

    model: Any
    fine_tuned: bool = False
    notes: list[str] = field(default_factory=list)


def clone(t: TF, model: Any) -> Any:
    """A copy of a tf-keras model with its own weights."""
    m = t.keras.models.clone_model(model)
    m.set_weights(model.get_weights())
    return m


# --------------------------------------------------------------------------------------------- fine-tuning


@dataclass(frozen=True)
class TrainingSetup:
    """How to fine-tune: data, loss and the epoch callback for progress."""

    data: Dataset
    loss: Any
    loss_name: str
    on_epoch: Callable[[int, int], None] | None = None
    output_index: int | None = None
    """The position of the output the labels train, when the model has several (the others get no loss). By
    position: wrapping layers (prune_low_magnitude_*, quant_*) renames a model's outputs."""


def outputs_are_probabilities(outputs: Array) -> bool:
    """True when every output row is a probability distribution (softmax) or in [0, 1] (sigmoid)."""
    if outputs.size == 0 or outputs.min() < -1e-6 or outputs.max() > 1 + 1e-6:
        return False
    if outputs.ndim >= 2 and outputs.shape[-1] > 1:
        return bool(np.allclose(outputs.sum(axis=-1), 1.0, atol=1e-3))
    return True


def choose_loss(t: TF, metric: Metric, y: Array, sample_outputs: Array) -> tuple[Any, str]:
    """A fine-tuning loss that fits the metric, the labels and what the model outputs."""
    losses = t.keras.losses
    probs = outputs_are_probabilities(sample_outputs)
    width = sample_outputs.shape[-1] if sample_outputs.ndim >= 2 else 1
    classification = metric.type in (MetricType.ACCURACY, MetricType.TOP_K) or (
        metric.type == MetricType.CUSTOM and y.ndim == 1 and y.dtype.kind in "iu" and width > 1
    )
    if metric.type == MetricType.MAE:
        return losses.MeanAbsoluteError(), "mae"
    if not classification:
        return losses.MeanSquaredError(), "mse"
    if width == 1:
        return losses.BinaryCrossentropy(from_logits=not probs), "binary_crossentropy"
    if y.ndim == 1:
        return losses.SparseCategoricalCrossentropy(from_logits=not probs), "sparse_categorical_crossentropy"
    return losses.CategoricalCrossentropy(from_logits=not probs), "categorical_crossentropy"


def _epoch_callback(t: TF, setup: TrainingSetup, epochs: int) -> Any:
    report = setup.on_epoch

    class EpochProgress(t.keras.callbacks.Callback):  # type: ignore[misc,name-defined]
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if report is not None:
                report(epoch + 1, epochs)

    return EpochProgress()


def fine_tune(t: TF, model: Any, setup: TrainingSetup, ft: FineTune, callbacks: Sequence[Any] = ()) -> None:
    """Compile (Adam) and fit on the fine-tuning data."""
    if setup.data.y is None:
        raise OptimizeError(f"{setup.data.label}: fine-tuning needs labels")
    loss: Any = setup.loss
    y: Any = setup.data.y
    if setup.output_index is not None:
        name = model.output_names[setup.output_index]
        loss, y = {name: loss}, {name: y}
    model.compile(optimizer=t.keras.optimizers.Adam(ft.learning_rate), loss=loss)
    model.fit(
        keras_inputs(setup.data.inputs),
        y,
        batch_size=ft.batch_size,
        epochs=ft.epochs,
        shuffle=True,
        verbose=0,
        callbacks=[*callbacks, _epoch_callback(t, setup, ft.epochs)],
    )


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size))


# --------------------------------------------------------------------------------------------- per-layer wrapping


def wrap_layers(t: TF, model: Any, wrap: Callable[[Any], Any], what: str) -> tuple[Any, list[str]]:
    """Clone the model wrapping each layer with ``wrap``; layers it rejects (ValueError) stay as they are.

    Returns (model, notes). The layers come from a private copy, so the input keeps its weights.
    """
    base = clone(t, model)
    skipped: list[str] = []
    wrapped = 0

    def clone_fn(layer: Any) -> Any:
        nonlocal wrapped
        if not layer.weights:
            return layer
        try:
            out = wrap(layer)
        except (ValueError, TypeError) as exc:
            skipped.append(f"{layer.name} ({first_line(exc)[:120]})")
            return layer
        if out is layer:
            return layer
        wrapped += 1
        return out

    if not (isinstance(model, t.keras.Sequential) or getattr(model, "_is_graph_network", False)):
        raise OptimizeError(
            f"{what} needs a Sequential or Functional tf-keras model (subclassed models are not supported)"
        )
    new = t.keras.models.clone_model(base, clone_function=clone_fn)
    notes = [f"{what}: layers left as they are: {', '.join(skipped)}"] if skipped else []
    if wrapped == 0:
        raise OptimizeError(f"{what}: no layer of the model supports it")
    return new, notes


def _wrappers(model: Any, cls: type) -> list[Any]:
    return [layer for layer in model.layers if isinstance(layer, cls)]


# --------------------------------------------------------------------------------------------- prune


def prune(
    t: TF, model: Any, p: PruneParams, setup: TrainingSetup | None, ft: FineTune | None, sample: Features
) -> Result:
    """Magnitude pruning with tfmot.sparsity.keras.prune_low_magnitude (unstructured or 2:4), then strip_pruning."""
    sparsity = t.tfmot.sparsity.keras
    notes: list[str] = []
    training = setup is not None and ft is not None
    total = steps_per_epoch(len(setup.data), ft.batch_size) * ft.epochs if setup is not None and ft is not None else 1
    if p.pattern == "2:4":
        kwargs: dict[str, Any] = {"sparsity_m_by_n": (2, 4)}
        notes.append("2:4 structured sparsity (2 zeros in every 4 input-channel weights, 50%)")

        def wrap(layer: Any) -> Any:
            kernel = next((w for w in layer.weights if "kernel" in w.name), None)
            if kernel is None or int(kernel.shape[-2] if len(kernel.shape) >= 2 else 0) % 4 != 0:
                raise ValueError("the input dimension is not a multiple of 4")
            return sparsity.prune_low_magnitude(layer, **kwargs)
    else:
        frequency = p.frequency
        if not training or p.schedule == PruningSchedule.CONSTANT:
            if training and frequency > total:
                frequency = 1
            schedule = sparsity.ConstantSparsity(
                p.target_sparsity, begin_step=0, frequency=frequency if training else 1
            )
            if not training and p.schedule == PruningSchedule.POLYNOMIAL_DECAY:
                notes.append("one-shot: PolynomialDecay needs fine-tuning, so the target sparsity applies at once")
        else:
            frequency = max(1, min(frequency, total // 4))
            # reach the target half way, then recover; the end step must be a mask-update step
            end = max(frequency, (total // 2) // frequency * frequency)
            schedule = sparsity.PolynomialDecay(
                initial_sparsity=p.initial_sparsity,
                final_sparsity=p.target_sparsity,
                begin_step=0,
                end_step=end,
                frequency=frequency,
            )
            notes.append(
                f"PolynomialDecay {p.initial_sparsity:g} -> {p.target_sparsity:g} over steps 0..{end} of {total}, "
                f"masks updated every {frequency} steps"
            )
        if frequency != p.frequency and training:
            notes.append(f"mask update frequency lowered to {frequency} (only {total} training steps)")

        def wrap(layer: Any) -> Any:
            return sparsity.prune_low_magnitude(layer, pruning_schedule=schedule)

    pm, wrap_notes = wrap_layers(t, model, wrap, "pruning")
    notes += wrap_notes
    if training:
        assert setup is not None and ft is not None
        fine_tune(t, pm, setup, ft, callbacks=[sparsity.UpdatePruningStep()])
    else:
        _one_shot_masks(t, pm, sample)
    stripped = sparsity.strip_pruning(pm)
    return Result(model=stripped, fine_tuned=training, notes=notes)


def _one_shot_masks(t: TF, pm: Any, sample: Features) -> None:
    """Compute the pruning masks once without training: step 0, one forward pass in training mode, apply masks."""
    from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

    layers = _wrappers(pm, pruning_wrapper.PruneLowMagnitude)
    for layer in layers:
        layer.pruning_step.assign(0)
    pm(keras_inputs(rows(sample, slice(0, 1))), training=True)
    for layer in layers:
        layer.pruning_obj.weight_mask_op()


# --------------------------------------------------------------------------------------------- cluster

_CENTROIDS = {
    CentroidInit.LINEAR: "LINEAR",
    CentroidInit.RANDOM: "RANDOM",
    CentroidInit.DENSITY_BASED: "DENSITY_BASED",
    CentroidInit.KMEANS_PLUS_PLUS: "KMEANS_PLUS_PLUS",
}


def cluster(t: TF, model: Any, c: ClusterParams, setup: TrainingSetup | None, ft: FineTune | None) -> Result:
    """Weight clustering with tfmot.clustering.keras.cluster_weights, then strip_clustering."""
    clustering = t.tfmot.clustering.keras
    init = getattr(clustering.CentroidInitialization, _CENTROIDS[c.centroid_init])
    notes: list[str] = []

    def wrap(layer: Any) -> Any:
        return clustering.cluster_weights(
            layer,
            number_of_clusters=c.number_of_clusters,
            cluster_centroids_init=init,
            preserve_sparsity=c.preserve_sparsity,
            cluster_per_channel=c.per_channel,
        )

    cm, wrap_notes = wrap_layers(t, model, wrap, "clustering")
    notes += wrap_notes
    training = setup is not None and ft is not None
    if training:
        assert setup is not None and ft is not None
        fine_tune(t, cm, setup, ft)
    return Result(model=clustering.strip_clustering(cm), fine_tuned=training, notes=notes)


# --------------------------------------------------------------------------------------------- low-rank


def choose_rank(singular: Array, m: int, n: int, lr: LowRankParams) -> int | None:
    """The rank for one kernel, or None when factorizing would not save parameters."""
    if lr.rank is not None:
        r = lr.rank
    else:
        assert lr.energy is not None
        energy = np.cumsum(np.square(singular.astype(np.float64)))
        total = energy[-1] if energy.size else 0.0
        r = 1 if total <= 0 else int(np.searchsorted(energy / total, lr.energy - 1e-12) + 1)
    r = max(1, min(r, min(m, n)))
    if r * (m + n) >= m * n:
        return None
    return r


def low_rank(t: TF, model: Any, lr: LowRankParams, setup: TrainingSetup | None, ft: FineTune | None) -> Result:
    """Factorize Dense kernels W (m x n) by truncated SVD: Dense(r, no bias) then Dense(n), A = U_r S_r, B = V_r^T.

    The model is rebuilt from its config (Sequential or Functional): each factorized Dense keeps its name for the
    second factor, so the graph around it is unchanged.
    """
    keras = t.keras
    pattern = re.compile(lr.layer_regex)
    factors: dict[str, tuple[Array, Array, int, float]] = {}
    notes: list[str] = []
    for layer in model.layers:
        if type(layer) is not keras.layers.Dense or not pattern.fullmatch(layer.name):
            continue
        if len(layer.inbound_nodes) > 1:
            notes.append(f"{layer.name}: shared layer left as it is")
            continue
        kernel = layer.get_weights()[0]
        m, n = kernel.shape
        u, s, vt = np.linalg.svd(kernel.astype(np.float64), full_matrices=False)
        r = choose_rank(s, m, n, lr)
        if r is None:
            continue
        kept = float(np.sum(s[:r] ** 2) / max(np.sum(s**2), 1e-30))
        a = (u[:, :r] * s[:r]).astype(np.float32)
        b = vt[:r].astype(np.float32)
        factors[layer.name] = (a, b, r, kept)
    if not factors:
        raise OptimizeError(
            "lowRank: no Dense layer can be factorized with fewer parameters "
            f"(layers matching {lr.layer_regex!r} need r*(m+n) < m*n)"
        )
    config = copy.deepcopy(model.get_config())
    sequential = isinstance(model, keras.Sequential)
    new_layers: list[dict[str, Any]] = []
    for entry in config["layers"]:
        name = entry["config"].get("name")
        if name in factors:
            r = factors[name][2]
            first: dict[str, Any] = {
                "class_name": "Dense",
                "config": {
                    "name": f"{name}_lowrank",
                    "trainable": entry["config"].get("trainable", True),
                    "dtype": entry["config"].get("dtype", "float32"),
                    "units": r,
                    "activation": "linear",
                    "use_bias": False,
                },
            }
            if not sequential:
                first["name"] = f"{name}_lowrank"
                first["inbound_nodes"] = entry["inbound_nodes"]
                entry = copy.deepcopy(entry)
                entry["inbound_nodes"] = [[[f"{name}_lowrank", 0, 0, {}]]]
            else:
                entry = copy.deepcopy(entry)
                entry.pop("build_config", None)
            new_layers.append(first)
        new_layers.append(entry)
    config["layers"] = new_layers
    try:
        rebuilt = type(model).from_config(config)
    except Exception as exc:
        raise OptimizeError(f"lowRank: cannot rebuild the model with factorized layers ({first_line(exc)})") from None
    old = {layer.name: layer for layer in model.layers}
    for layer in rebuilt.layers:
        if layer.name.endswith("_lowrank") and layer.name[: -len("_lowrank")] in factors:
            layer.set_weights([factors[layer.name[: -len("_lowrank")]][0]])
        elif layer.name in factors:
            weights = old[layer.name].get_weights()
            layer.set_weights([factors[layer.name][1], *weights[1:]])
        elif layer.name in old and layer.weights:
            layer.set_weights(old[layer.name].get_weights())
    for name, (a, b, r, kept) in factors.items():
        m, n = a.shape[0], b.shape[1]
        notes.append(f"{name}: {m}x{n} -> rank {r} ({m * n} -> {r * (m + n)} weights, {kept:.1%} of the energy)")
    training = setup is not None and ft is not None
    if training:
        assert setup is not None and ft is not None
        fine_tune(t, rebuilt, setup, ft)
    return Result(model=rebuilt, fine_tuned=training, notes=notes)


# --------------------------------------------------------------------------------------------- QAT


def qat(t: TF, model: Any, setup: TrainingSetup, ft: FineTune, *, pruned: bool, clustered: bool) -> Result:
    """Quantization-aware training (tfmot quantize_apply), sparsity/cluster preserving after prune/cluster steps."""
    q = t.tfmot.quantization.keras
    combine = t.tfmot.experimental.combine
    notes: list[str] = []
    if clustered:
        scheme = combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=pruned)
        notes.append("cluster-preserving QAT (CQAT)")
    elif pruned:
        scheme = combine.Default8BitPrunePreserveQuantizeScheme()
        notes.append("sparsity-preserving QAT (PQAT)")
    else:
        scheme = None  # quantize_apply's default 8-bit scheme
    base = clone(t, model)
    with q.quantize_scope():
        annotated = q.quantize_annotate_model(base)
        qm = q.quantize_apply(annotated, scheme) if scheme is not None else q.quantize_apply(annotated)
    fine_tune(t, qm, setup, ft)
    return Result(model=qm, fine_tuned=True, notes=notes)
