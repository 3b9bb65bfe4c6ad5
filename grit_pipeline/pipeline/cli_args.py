"""Command-line flags shared by `grit run` and `grit stage`, generated from ``PipelineConfig``'s fields."""
from __future__ import annotations

import argparse

from grit_pipeline import config_flags

from .config import PipelineConfig


def add_pipeline_arguments(parser: argparse.ArgumentParser, input_required: bool = True) -> None:
    """One flag per ``PipelineConfig`` field; ``--output`` always required, ``--input`` when asked."""
    config_flags.add_config_arguments(parser, PipelineConfig,
                                      required=("output", "input") if input_required else ("output",))


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    """The ``PipelineConfig`` the parsed flags describe (an empty --model / --ray-address means unset)."""
    config = config_flags.config_from_args(PipelineConfig, args)
    return config.replace(model=config.model or None, ray_address=config.ray_address or None)
