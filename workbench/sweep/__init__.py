"""Sweeping a dataset: which inputs break the variant, and why (`workbench.sweep`, `workbench sweep`)."""

from workbench.sweep.api import SweepOptions, sweep
from workbench.sweep.groups import RootGroup
from workbench.sweep.result import SweepResult

__all__ = ["RootGroup", "SweepOptions", "SweepResult", "sweep"]
