"""Train and compare: typed run configs, the trainer, data, sweeps and reports (the top wing: it may import
every other part of kwlab, and nothing imports it)."""

from . import data, report, sweep
from .callbacks import Callback, ProbeCallback, load_history
from .config import ConfigError, RunConfig
from .recipes import RECIPES, get_recipe, list_recipes
from .setup import build_model
from .train import Trainer, fit

__all__ = [
    "Callback",
    "ConfigError",
    "ProbeCallback",
    "RECIPES",
    "RunConfig",
    "Trainer",
    "build_model",
    "fit",
    "get_recipe",
    "list_recipes",
    "load_history",
    "data",
    "report",
    "sweep",
]
