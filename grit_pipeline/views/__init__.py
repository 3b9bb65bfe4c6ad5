"""Views of a dataset directory for people: the HTML gallery and the dataset report.

``grit_pipeline.views.dataset`` reads a directory (a GRIT build written by ``grit run`` or downloaded
GrIT-20M img2dataset shards) into plain samples; ``gallery`` and ``report`` render them as static files
that open from disk with no server and no network.
"""
