"""Evaluation machinery shared by every task (``kosmos.tasks``): loading a model (``model``), batched generation
from interleaved prompts (``generate``), log-likelihood ranking of candidates with the shared context encoded once
(``rank``), demonstrations for few-shot prompts (``fewshot``), the metrics by family (``metrics``: grounding,
captioning, vqa, classification, squad) and the readers of the benchmarks' file formats (``formats``).

Nothing here imports ``kosmos.train``: training takes its evaluators from the task registry instead.
"""
