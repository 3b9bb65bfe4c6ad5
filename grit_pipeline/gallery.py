"""The HTML gallery of a dataset directory (implementation in ``grit_pipeline.views.gallery``)."""
from grit_pipeline.views.gallery import write_gallery

__all__ = ["write_gallery"]
