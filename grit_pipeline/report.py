"""The dataset report of a dataset directory (implementation in ``grit_pipeline.views.report``)."""
from grit_pipeline.views.report import write_report

__all__ = ["write_report"]
