"""What to do to the model before it ships: ordered steps or an automatic search, data, metric and gate."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field, StrictBool, StringConstraints, model_validator

from .common import ApiModel, LocalObjectReference, nested
from .jobs import JobSettings
from .rules import Rule, enforce, rules_schema
from .source import Credentials, Uri


class StepType(StrEnum):
    """The kind of an optimization step."""

    PRUNE = "prune"
    CLUSTER = "cluster"
    LOW_RANK = "lowRank"
    QUANTIZE = "quantize"


class PruningSchedule(StrEnum):
    """How sparsity grows during fine-tuning (tfmot.sparsity.keras schedules)."""

    CONSTANT = "Constant"
    POLYNOMIAL_DECAY = "PolynomialDecay"


class FineTune(ApiModel):
    """Training run that recovers accuracy after a step (needs spec.optimization.data.fineTune)."""

    epochs: Annotated[int, Field(ge=1, le=1000)] = 2
    """Epochs over the fine-tuning data."""
    learning_rate: Annotated[float, Field(gt=0, le=1)] = 1e-4
    """Adam learning rate."""
    batch_size: Annotated[int, Field(ge=1, le=65536)] = 32
    """Mini-batch size."""


class PruneParams(ApiModel):
    """Magnitude pruning (tfmot.sparsity.keras.prune_low_magnitude)."""

    target_sparsity: Annotated[float, Field(ge=0.0, le=0.99)] = 0.5
    """Fraction of weights set to zero at the end of the schedule."""
    schedule: PruningSchedule = PruningSchedule.POLYNOMIAL_DECAY
    """Constant (one-shot) or PolynomialDecay (sparsity ramps up during fine-tuning)."""
    initial_sparsity: Annotated[float, Field(ge=0.0, le=0.99)] = 0.0
    """Starting sparsity of a PolynomialDecay schedule."""
    frequency: Annotated[int, Field(ge=1, le=100000)] = 10
    """Steps between mask updates."""
    pattern: Annotated[str, StringConstraints(pattern=r"^(unstructured|2:4)$")] = "unstructured"
    """unstructured, or 2:4 structured sparsity (two zeros in every four weights; fixed 50%)."""


class CentroidInit(StrEnum):
    """How cluster centroids start (tfmot.clustering.keras.CentroidInitialization)."""

    LINEAR = "Linear"
    RANDOM = "Random"
    DENSITY_BASED = "DensityBased"
    KMEANS_PLUS_PLUS = "KMeansPlusPlus"


class ClusterParams(ApiModel):
    """Weight clustering / sharing (tfmot.clustering.keras.cluster_weights)."""

    number_of_clusters: Annotated[int, Field(ge=2, le=256)] = 16
    """Distinct weight values per kernel."""
    centroid_init: CentroidInit = CentroidInit.KMEANS_PLUS_PLUS
    """Centroid initialization."""
    preserve_sparsity: StrictBool = False
    """Keep zeros from an earlier prune step zero (collaborative optimization)."""
    per_channel: StrictBool = False
    """Cluster each output channel separately (better accuracy for convolutions)."""


LOW_RANK_RULES: tuple[Rule, ...] = (
    Rule(
        cel="has(self.rank) != has(self.energy)",
        message="set exactly one of rank or energy",
        check=lambda m: (m.rank is None) != (m.energy is None),
    ),
)


class LowRankParams(ApiModel):
    """Low-rank factorization of Dense kernels by truncated SVD: W (m x n) becomes A (m x r) times B (r x n)."""

    model_config = ConfigDict(json_schema_extra=rules_schema(LOW_RANK_RULES))

    rank: Annotated[int, Field(ge=1, le=65536)] | None = None
    """Fixed rank r for every factorized layer."""
    energy: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    """Smallest rank keeping this fraction of the squared singular values (per layer)."""
    layer_regex: Annotated[str, StringConstraints(min_length=1, max_length=256)] = ".*"
    """Only Dense layers whose name matches are factorized; layers where r*(m+n) >= m*n are left alone."""

    @model_validator(mode="after")
    def _rules(self) -> LowRankParams:
        enforce(self, LOW_RANK_RULES)
        return self


class QuantizeMode(StrEnum):
    """Quantization method: post-training (TFLite converter) or quantization-aware training."""

    DYNAMIC = "dynamic"
    FLOAT16 = "float16"
    INT8 = "int8"
    INT16X8 = "int16x8"
    QAT = "qat"


class QuantizeParams(ApiModel):
    """Quantization (tf.lite.TFLiteConverter post-training, or tfmot quantize_model for QAT)."""

    mode: QuantizeMode = QuantizeMode.INT8
    """dynamic (int8 weights), float16, int8 (weights and activations; needs calibration data), int16x8, or qat."""
    integer_only: StrictBool = False
    """int8 only: int8 inputs and outputs too (the server quantizes for callers)."""
    representative_samples: Annotated[int, Field(ge=1, le=100000)] = 200
    """How many calibration samples the converter sees."""


STEP_RULES: tuple[Rule, ...] = (
    Rule(
        cel="(self.type == 'prune') == has(self.prune) && (self.type == 'cluster') == has(self.cluster) "
        "&& (self.type == 'lowRank') == has(self.lowRank) && (self.type == 'quantize') == has(self.quantize)",
        message="a step carries exactly the parameters of its type (prune, cluster, lowRank or quantize)",
        check=lambda m: all(
            (m.type == t) == (getattr(m, a) is not None)
            for t, a in (
                (StepType.PRUNE, "prune"),
                (StepType.CLUSTER, "cluster"),
                (StepType.LOW_RANK, "low_rank"),
                (StepType.QUANTIZE, "quantize"),
            )
        ),
    ),
)


class OptimizationStep(ApiModel):
    """One step of the pipeline; steps run in the order given."""

    model_config = ConfigDict(json_schema_extra=rules_schema(STEP_RULES))

    type: StepType
    """Which technique this step applies."""
    prune: PruneParams | None = None
    """Parameters when type is prune."""
    cluster: ClusterParams | None = None
    """Parameters when type is cluster."""
    low_rank: LowRankParams | None = None
    """Parameters when type is lowRank."""
    quantize: QuantizeParams | None = None
    """Parameters when type is quantize."""
    fine_tune: FineTune | None = None
    """Fine-tuning after the step (prune, cluster, lowRank, qat); without it training steps run one-shot."""

    @model_validator(mode="after")
    def _rules(self) -> OptimizationStep:
        enforce(self, STEP_RULES)
        return self


class DataFormat(StrEnum):
    """File format of a data set."""

    NPZ = "npz"
    NPY = "npy"
    CSV = "csv"
    TFRECORD = "tfrecord"


DEFAULT_FEATURES = "x"
"""The array, column prefix or feature key of a one-input model's inputs when a DataRef names none."""

DataName = Annotated[str, StringConstraints(min_length=1, max_length=253)]

DATA_REF_RULES: tuple[Rule, ...] = (
    Rule(
        cel="!(has(self.features) && has(self.inputs))",
        message="set features (a one-input model) or inputs (one entry per model input), not both",
        check=lambda m: m.features is None or m.inputs is None,
        field_path=".inputs",
    ),
    Rule(
        cel="!has(self.inputs) || self.inputs.all(k, size(k) >= 1 && size(k) <= 253)",
        message="input names are 1 to 253 characters",
        check=lambda m: m.inputs is None or all(1 <= len(k) <= 253 for k in m.inputs),
        field_path=".inputs",
    ),
    Rule(
        cel="!has(self.credentials) || !has(self.credentials.serviceAccountName)",
        message="a data set has no ServiceAccount of its own: the optimization Job fetches the model and every "
        "data set in one pod, which runs as spec.model.credentials.serviceAccountName; remove it here (and set it "
        "there if the data needs that identity)",
        check=lambda m: m.credentials is None or m.credentials.service_account_name is None,
        field_path=".credentials.serviceAccountName",
    ),
)


class DataRef(ApiModel):
    """A data set for calibration, evaluation or fine-tuning."""

    model_config = ConfigDict(json_schema_extra=rules_schema(DATA_REF_RULES))

    uri: Uri
    """Location of the data (same schemes as the model)."""
    format: DataFormat
    """npz, npy, csv or tfrecord."""
    features: DataName | None = None
    """One-input models: array name (npz, npy field), column name prefix (csv) or feature key (tfrecord) of the
    inputs (default x)."""
    inputs: Annotated[dict[str, DataName], Field(min_length=1, max_length=64)] | None = None
    """Models with several inputs: the model's input name -> its array name (npz, npy field), column name prefix
    (csv; a column goes to the longest prefix it starts with) or feature key (tfrecord), e.g.
    {first: x1, second: x2}. Every model input needs an entry."""
    labels: Annotated[str, StringConstraints(min_length=1, max_length=253)] | None = "y"
    """Array name, column or feature key of the labels; unset for unlabelled calibration data."""
    samples: Annotated[int, Field(ge=1, le=10_000_000)] | None = None
    """Use at most this many samples (all when unset)."""
    credentials: Credentials | None = None
    """Credentials for private storage, by reference only: endpoint, CA and Secret of this data set's own (never the
    model's). Not serviceAccountName: the Job runs as one ServiceAccount, the model's."""

    @model_validator(mode="after")
    def _rules(self) -> DataRef:
        enforce(self, DATA_REF_RULES)
        return self


class OptimizationData(ApiModel):
    """Data sets the optimizer uses."""

    calibration: DataRef | None = None
    """Representative inputs for int8 / int16x8 calibration; should cover the range of production inputs."""
    evaluation: DataRef | None = None
    """Held-out labelled data for the metric and the gate."""
    fine_tune: DataRef | None = None
    """Labelled training data for fine-tuning after prune / cluster / lowRank and for QAT."""


class MetricType(StrEnum):
    """What the gate compares."""

    ACCURACY = "accuracy"
    TOP_K = "topK"
    MSE = "mse"
    MAE = "mae"
    CUSTOM = "custom"


METRIC_RULES: tuple[Rule, ...] = (
    Rule(
        cel="self.type != 'custom' || has(self.callable)",
        message="a custom metric needs callable (module:function)",
        check=lambda m: m.type != MetricType.CUSTOM or m.callable is not None,
        field_path=".callable",
    ),
)


class Metric(ApiModel):
    """How the model is scored on the evaluation data."""

    model_config = ConfigDict(json_schema_extra=rules_schema(METRIC_RULES))

    type: MetricType = MetricType.ACCURACY
    """accuracy, topK, mse, mae (lower is better for mse/mae), or custom."""
    k: Annotated[int, Field(ge=1, le=1000)] = 5
    """k for topK."""
    callable: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")] | None = None
    """custom: module:function taking (y_true, y_pred) numpy arrays and returning a float (higher is better)."""
    code_ref: LocalObjectReference | None = None
    """custom: ConfigMap whose files are put on the optimizer's PYTHONPATH."""
    output: DataName | None = None
    """The model output the metric reads, and fine-tuning trains against the labels (by name, as the model or
    its serving signature names it); default: the only output. A model with several outputs needs it."""

    @model_validator(mode="after")
    def _rules(self) -> Metric:
        enforce(self, METRIC_RULES)
        return self


class DropType(StrEnum):
    """How maxDrop is measured."""

    ABSOLUTE = "absolute"
    RELATIVE = "relative"


class OnFail(StrEnum):
    """What happens when no result passes the gate."""

    BLOCK = "Block"
    DEPLOY_BASELINE = "DeployBaseline"
    DEPLOY_BEST_PASSING = "DeployBestPassing"


GATE_RULES: tuple[Rule, ...] = (
    Rule(
        cel="self.dropType != 'relative' || self.maxDrop <= 1.0",
        message="a relative maxDrop is a fraction between 0 and 1",
        check=lambda m: m.drop_type != DropType.RELATIVE or m.max_drop <= 1.0,
        field_path=".maxDrop",
    ),
)


class Gate(ApiModel):
    """The accuracy gate: the optimized model ships only if its metric stays within maxDrop of the original."""

    model_config = ConfigDict(json_schema_extra=rules_schema(GATE_RULES))

    max_drop: Annotated[float, Field(ge=0.0, le=1000.0)] = 0.01
    """Largest allowed loss of the metric (for mse/mae: largest allowed increase)."""
    drop_type: DropType = DropType.ABSOLUTE
    """absolute (metric points) or relative (fraction of the baseline)."""
    on_fail: OnFail = OnFail.BLOCK
    """Block (keep serving what serves now), DeployBaseline (ship the unoptimized model) or DeployBestPassing
    (ship the last step's result, or the best auto candidate, that passed)."""


class Strategy(StrEnum):
    """Steps as written, or an automatic search over candidates."""

    STEPS = "Steps"
    AUTO = "Auto"


class Objective(StrEnum):
    """What the automatic search optimizes among candidates that pass the gate."""

    SIZE = "Size"
    LATENCY = "Latency"


class ExportFormat(StrEnum):
    """Format of the optimized artifact."""

    TFLITE = "tflite"
    SAVEDMODEL = "savedmodel"


class Export(ApiModel):
    """The artifact the optimizer writes."""

    format: ExportFormat = ExportFormat.TFLITE
    """tflite (served by the Modelship runtime) or savedmodel."""


def _needs_calibration(m: Optimization) -> bool:
    return any(s.quantize is not None and s.quantize.mode in (QuantizeMode.INT8, QuantizeMode.INT16X8) for s in m.steps)


OPTIMIZATION_RULES: tuple[Rule, ...] = (
    Rule(
        cel="self.strategy == 'Auto' || !self.enabled || size(self.steps) > 0",
        message="strategy Steps needs at least one step",
        check=lambda m: m.strategy == Strategy.AUTO or not m.enabled or len(m.steps) > 0,
        field_path=".steps",
    ),
    Rule(
        cel="self.strategy == 'Auto' || !self.steps.exists(s, has(s.quantize) && "
        "(s.quantize.mode == 'int8' || s.quantize.mode == 'int16x8')) "
        "|| (has(self.data) && has(self.data.calibration))",
        message="int8 and int16x8 quantization need calibration data (data.calibration)",
        check=lambda m: m.strategy == Strategy.AUTO or not _needs_calibration(m) or m.data.calibration is not None,
        field_path=".data",
    ),
    Rule(
        cel="!self.steps.exists(s, has(s.fineTune) || (has(s.quantize) && s.quantize.mode == 'qat')) "
        "|| (has(self.data) && has(self.data.fineTune))",
        message="fineTune and qat need training data (data.fineTune)",
        check=lambda m: (
            not any(
                s.fine_tune is not None or (s.quantize is not None and s.quantize.mode == QuantizeMode.QAT)
                for s in m.steps
            )
            or m.data.fine_tune is not None
        ),
        field_path=".data",
    ),
    Rule(
        cel="!self.enabled || has(self.data) && has(self.data.evaluation)",
        message="the accuracy gate needs evaluation data (data.evaluation)",
        check=lambda m: not m.enabled or m.data.evaluation is not None,
        field_path=".data",
    ),
    Rule(
        cel="self.steps.filter(s, s.type == 'quantize').size() <= 1",
        message="at most one quantize step",
        check=lambda m: sum(1 for s in m.steps if s.type == StepType.QUANTIZE) <= 1,
        field_path=".steps",
    ),
    Rule(
        cel="!(self.metric.type == 'accuracy' || self.metric.type == 'topK') || self.gate.maxDrop <= 1.0",
        message="for accuracy and topK, maxDrop is at most 1.0",
        check=lambda m: m.metric.type not in (MetricType.ACCURACY, MetricType.TOP_K) or m.gate.max_drop <= 1.0,
        field_path=".gate.maxDrop",
    ),
)


class Optimization(ApiModel):
    """The optimization stage: what to try, on which data, judged by which metric and gate."""

    model_config = ConfigDict(json_schema_extra=rules_schema(OPTIMIZATION_RULES))

    enabled: StrictBool = True
    """false serves the model as given (converted to the export format)."""
    strategy: Strategy = Strategy.STEPS
    """Steps runs steps in order; Auto tries a candidate set within timeBudgetSeconds and keeps the best passing."""
    objective: Objective = Objective.SIZE
    """Auto: pick the smallest or the fastest passing candidate."""
    time_budget_seconds: Annotated[int, Field(ge=10, le=86400)] = 900
    """Auto: stop trying candidates after this long."""
    steps: Annotated[list[OptimizationStep], Field(max_length=8)] = nested(list)
    """Ordered steps (low-rank first, then prune, cluster, quantize is the usual order)."""
    data: OptimizationData = nested(OptimizationData)
    """Calibration, evaluation and fine-tuning data."""
    metric: Metric = nested(Metric)
    """Metric computed on the evaluation data before and after."""
    gate: Gate = nested(Gate)
    """The accuracy gate."""
    export: Export = nested(Export)
    """Artifact format."""
    job: JobSettings = nested(JobSettings)
    """How the optimization Job runs."""

    @model_validator(mode="after")
    def _rules(self) -> Optimization:
        enforce(self, OPTIMIZATION_RULES)
        return self
