"""kosmos: train and evaluate Kosmos-2 (transformers' implementation) on GRIT webdataset shards.

Modules: ``presets`` (model sizes), ``tokenizer`` (from-scratch tokenizer + processor), ``data``
(webdataset loader and sample encoding), ``train`` (training loop, checkpoints, Ray Train),
``predict`` (generation per evaluation task), ``metrics`` / ``score`` (metrics from saved predictions),
``refcoco`` (synthetic truth -> MDETR RefCOCO annotations), ``e2e`` (the whole loop as a benchmark).
"""
