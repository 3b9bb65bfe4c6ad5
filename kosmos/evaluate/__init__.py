"""Evaluation machinery shared by every task (``kosmos.tasks``): loading a model (``model``), batched generation
from interleaved prompts (``generate``), log-likelihood ranking of candidates with the shared context encoded once
(``rank``), demonstrations for few-shot prompts (``fewshot``) and the Kosmos-1 suite runner (``suite``).

Nothing here imports ``kosmos.train``: training takes its evaluators from the task registry instead.
"""
