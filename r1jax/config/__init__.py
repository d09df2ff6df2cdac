"""Configuration: every default once (``schema``), the ConfigDict config files edit and its one
conversion into frozen sections (``typed``), and command-line parsing (``flags``)."""

from r1jax.config.schema import (
    KINDS,
    TRAINING_KINDS,
    VARIANTS,
    ConvertConfig,
    DataConfig,
    DistillConfig,
    EvalConfig,
    GRPOConfig,
    MeshConfig,
    OptimConfig,
    RejectionConfig,
    RewardModelConfig,
    RewardPoolConfig,
    SampleConfig,
    TokenizerConfig,
    TrainConfig,
)
from r1jax.config.typed import Stage, defaults, model_dict, section, section_dict, typed

__all__ = [
    "KINDS",
    "TRAINING_KINDS",
    "VARIANTS",
    "ConvertConfig",
    "DataConfig",
    "DistillConfig",
    "EvalConfig",
    "GRPOConfig",
    "MeshConfig",
    "OptimConfig",
    "RejectionConfig",
    "RewardModelConfig",
    "RewardPoolConfig",
    "SampleConfig",
    "Stage",
    "TokenizerConfig",
    "TrainConfig",
    "defaults",
    "model_dict",
    "section",
    "section_dict",
    "typed",
]
