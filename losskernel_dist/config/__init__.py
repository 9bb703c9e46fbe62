"""Run configuration: one YAML file, validated at load, with dotted ``--set`` overrides.

``schema.py`` and ``workflow.py`` define the sections (defaults, help text,
checks), ``choices.py`` the fixed-choice values, ``load.py`` reading and
overriding, ``keys.py`` dotted keys, defaults and the draw-changing keys. The
names every other module uses are re-exported here.
"""

from ..errors import ConfigError
from .base import Choice, Section
from .choices import (
    Autocast,
    BatchedEval,
    Cluster,
    GuardAction,
    KernelDtype,
    KernelKind,
    NeighboursMetric,
    ReduceEngine,
    ReduceScheduler,
    WordnetMode,
)
from .keys import (
    config_default,
    differing_draw_keys,
    draw_keys,
    get_dotted,
    section_fields,
    set_dotted,
)
from .load import (
    RENAMED,
    apply_overrides,
    config_from_dict,
    dump_config,
    guards_from_dict,
    load_config,
    section_from_dict,
)
from .schema import (
    DRAW_KEYS,
    AnalysisConfig,
    Config,
    EvalConfig,
    GuardsConfig,
    ReduceConfig,
    SamplerConfig,
    TaskConfig,
)
from .workflow import CalibrateConfig, DevelopmentConfig, SlurmConfig

__all__ = [
    "DRAW_KEYS",
    "RENAMED",
    "AnalysisConfig",
    "Autocast",
    "BatchedEval",
    "CalibrateConfig",
    "Choice",
    "Cluster",
    "Config",
    "ConfigError",
    "DevelopmentConfig",
    "EvalConfig",
    "GuardAction",
    "GuardsConfig",
    "KernelDtype",
    "KernelKind",
    "NeighboursMetric",
    "ReduceScheduler",
    "ReduceConfig",
    "ReduceEngine",
    "SamplerConfig",
    "Section",
    "SlurmConfig",
    "TaskConfig",
    "WordnetMode",
    "apply_overrides",
    "config_default",
    "config_from_dict",
    "differing_draw_keys",
    "draw_keys",
    "dump_config",
    "get_dotted",
    "guards_from_dict",
    "load_config",
    "section_fields",
    "section_from_dict",
    "set_dotted",
]
