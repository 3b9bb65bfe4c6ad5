"""The GRIT pipeline: ingest img2dataset shards, find noun chunks, ground them, expand, write a build.

Public entry points (see docs/DESIGN.md, "Pipeline API")::

    from grit_pipeline.pipeline import PipelineConfig, run_pipeline, run_stage
    summary = run_pipeline(PipelineConfig(input="shards/", output="grit/"))
"""
from .api import RunSummary, run_pipeline, run_stage
from .config import STAGE_ORDER, PipelineConfig
from .stats import collect_totals, drop_reasons, format_totals

__all__ = ["PipelineConfig", "RunSummary", "run_pipeline", "run_stage", "STAGE_ORDER",
           "collect_totals", "drop_reasons", "format_totals"]
