"""The candidate set of ``strategy: Auto``: step chains built from the same API objects users write by hand.

Only candidates the data allows are proposed: int8 needs calibration data; prune, cluster and low-rank fine-tune
when there is fine-tuning data (and run one-shot at gentler settings when there is none); QAT needs fine-tuning data;
a SavedModel without tf-keras metadata gets post-training quantization only.
"""

from __future__ import annotations

from dataclasses import dataclass

from .optimization import (
    ClusterParams,
    ExportFormat,
    FineTune,
    LowRankParams,
    OptimizationStep,
    PruneParams,
    PruningSchedule,
    QuantizeMode,
    QuantizeParams,
    StepType,
)


@dataclass(frozen=True)
class Candidate:
    """A named chain of steps."""

    name: str
    steps: tuple[OptimizationStep, ...]


# Recipes measured on the digits MLP/CNN (TF 2.21): pruning recovers with a higher learning rate than
# clustering, which should move centroids gently.
PRUNE_TUNE = FineTune(epochs=4, learning_rate=1e-3, batch_size=32)
CLUSTER_TUNE = FineTune(epochs=3, learning_rate=1e-4, batch_size=32)
LOW_RANK_TUNE = FineTune(epochs=4, learning_rate=5e-4, batch_size=32)
QAT_TUNE = FineTune(epochs=2, learning_rate=1e-4, batch_size=32)


def _prune(sparsity: float, tune: FineTune | None) -> OptimizationStep:
    schedule = PruningSchedule.POLYNOMIAL_DECAY if tune is not None else PruningSchedule.CONSTANT
    return OptimizationStep(
        type=StepType.PRUNE,
        prune=PruneParams(target_sparsity=sparsity, schedule=schedule, frequency=10),
        fine_tune=tune,
    )


def _cluster(clusters: int, tune: FineTune | None, preserve_sparsity: bool = False) -> OptimizationStep:
    return OptimizationStep(
        type=StepType.CLUSTER,
        cluster=ClusterParams(number_of_clusters=clusters, preserve_sparsity=preserve_sparsity),
        fine_tune=tune,
    )


def _low_rank(energy: float, tune: FineTune | None) -> OptimizationStep:
    return OptimizationStep(type=StepType.LOW_RANK, low_rank=LowRankParams(energy=energy), fine_tune=tune)


def _quantize(mode: QuantizeMode, tune: FineTune | None = None) -> OptimizationStep:
    return OptimizationStep(type=StepType.QUANTIZE, quantize=QuantizeParams(mode=mode), fine_tune=tune)


def auto_candidates(
    *,
    trainable: bool,
    calibration: bool,
    fine_tune: bool,
    export: ExportFormat = ExportFormat.TFLITE,
) -> list[Candidate]:
    """Candidates in the order they are tried (cheap post-training ones first)."""
    ptq = QuantizeMode.INT8 if calibration else QuantizeMode.DYNAMIC
    q = ptq.value
    out: list[Candidate] = []
    if export == ExportFormat.TFLITE:
        out.append(Candidate("dynamic", (_quantize(QuantizeMode.DYNAMIC),)))
        out.append(Candidate("float16", (_quantize(QuantizeMode.FLOAT16),)))
        if calibration:
            out.append(Candidate("int8", (_quantize(QuantizeMode.INT8),)))
    if trainable:
        if fine_tune:
            chains: list[tuple[str, tuple[OptimizationStep, ...]]] = [
                ("prune80", (_prune(0.8, PRUNE_TUNE),)),
                ("cluster16", (_cluster(16, CLUSTER_TUNE),)),
                ("prune80+cluster16", (_prune(0.8, PRUNE_TUNE), _cluster(16, CLUSTER_TUNE, preserve_sparsity=True))),
                ("lowRank90", (_low_rank(0.9, LOW_RANK_TUNE),)),
                ("prune90", (_prune(0.9, PRUNE_TUNE),)),
            ]
        else:
            chains = [
                ("cluster16", (_cluster(16, None),)),
                ("prune50", (_prune(0.5, None),)),
                ("lowRank95", (_low_rank(0.95, None),)),
            ]
        for name, steps in chains:
            if export == ExportFormat.TFLITE:
                out.append(Candidate(f"{name}+{q}", (*steps, _quantize(ptq))))
            else:
                out.append(Candidate(name, steps))
        if fine_tune and export == ExportFormat.TFLITE:
            out.append(Candidate("qat", (_quantize(QuantizeMode.QAT, QAT_TUNE),)))
    return out
