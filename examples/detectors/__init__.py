"""Worked detector backends from outside grit (docs/detectors.md, "Bring your own detector").

Each module is a complete adapter; name one with ``--detector examples.detectors.<module>:<Class>`` from the
repository root, or copy it into your own package and register it as an entry point of group
``grit_pipeline.detectors``.

- ``glip_detector.GLIPDetector``: GLIP, the detector the Kosmos-2 paper used, through its own inference API
  (microsoft/GLIP, ``maskrcnn_benchmark``).
- ``kosmos2_grounder.Kosmos2Grounder``: Kosmos-2 itself as a phrase grounder (transformers), a model the
  built-in ``hf`` backend (zero-shot object detectors) does not cover.
"""
