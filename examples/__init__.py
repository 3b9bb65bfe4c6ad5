"""Examples that are not part of the ``grit`` distribution (``[tool.setuptools.packages.find]`` lists only
``grit_pipeline``, ``kosmos`` and ``stages``). A package only so that the examples import as
``examples.detectors.<module>`` from the repository root."""
