"""The ModelDeployment API (modelship.io/v1alpha1) in pydantic: the one source of truth for the CRD."""

from .build import Build, BuildEngine, Platform
from .common import ApiModel, ResourceRequirements
from .jobs import JobSettings
from .modeldeployment import ModelDeployment, ModelDeploymentSpec, ObjectMeta
from .optimization import (
    DataRef,
    Gate,
    Metric,
    OnFail,
    Optimization,
    OptimizationStep,
    QuantizeMode,
    StepType,
    Strategy,
)
from .report import GateDecision, Measurement, Report, ShipDecision, StepReport, Summary
from .serving import HardwareTarget, Serving
from .source import ModelFormat, ModelSource
from .status import Condition, ConditionType, ModelDeploymentStatus, Phase

__all__ = [
    "ApiModel",
    "Build",
    "BuildEngine",
    "Condition",
    "ConditionType",
    "DataRef",
    "Gate",
    "GateDecision",
    "HardwareTarget",
    "JobSettings",
    "Measurement",
    "Metric",
    "ModelDeployment",
    "ModelDeploymentSpec",
    "ModelDeploymentStatus",
    "ModelFormat",
    "ModelSource",
    "ObjectMeta",
    "OnFail",
    "Optimization",
    "OptimizationStep",
    "Phase",
    "Platform",
    "QuantizeMode",
    "Report",
    "ResourceRequirements",
    "Serving",
    "ShipDecision",
    "StepReport",
    "StepType",
    "Strategy",
    "Summary",
]
