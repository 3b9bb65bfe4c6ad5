"""The instruction-tuning recipe (`kosmos train --recipe instruct --init MODEL`; Kosmos-2 paper, Table 8).

Paper: after pre-training, 10k steps at lr 1e-5 with 375 warm-up steps, each step holding 117 language-instruction,
351 vision-language-instruction, 1,404 grounded (GRIT pairs + grounded instruction data), 30 text and 15
interleaved sequences. Where the paper is silent (docs/instruct.md, docs/decisions.md):

- the 117 language-instruction sequences are split evenly between Unnatural Instructions and FLAN, the 1,404
  grounded ones evenly between GRIT pairs (``grounded``) and `grit instruct` data (``grit_instruct``);
- smaller presets keep the paper's ratios: steps = the preset's pre-training steps x 10k/60k, warm-up 3.75% of
  them (375/10k), lr = the preset's pre-training lr x 1e-5/2e-4 (the paper preset gets exactly 10k, 375, 1e-5);
- ``--batch-size`` is the GRIT pairs' rows per step; every other source gets its Table 8 share of that.
"""
from __future__ import annotations

RECIPES = ("pretrain", "instruct")
# Table 8 per source kind, in sequences per step.
INSTRUCT_SEQUENCES_PER_STEP = {"unnatural": 58.5, "flan": 58.5, "llava": 351, "grounded": 702,
                               "grit_instruct": 702, "text": 30, "interleaved": 15}
PAPER_STEPS, PAPER_WARMUP, PAPER_LR = 10_000, 375, 1e-5
PRETRAIN_STEPS, PRETRAIN_LR = 60_000, 2e-4


def recipe_defaults(preset) -> dict:
    """steps, warmup_steps and lr of the instruct recipe for a preset (the paper's, scaled by its ratios)."""
    steps = max(1, round(preset.max_steps * PAPER_STEPS / PRETRAIN_STEPS))
    return {"steps": steps, "warmup_steps": max(1, round(steps * PAPER_WARMUP / PAPER_STEPS)),
            "lr": preset.lr * PAPER_LR / PRETRAIN_LR}


def fill_batch_sizes(specs, batch_size: int, recipe: str) -> None:
    """Unset batch sizes: an instruction source always gets its Table 8 share relative to ``batch_size`` GRIT
    rows; under the instruct recipe, text and interleaved do too (``kosmos.mix`` fills the rest)."""
    scale = batch_size / INSTRUCT_SEQUENCES_PER_STEP["grounded"]
    pretraining_kinds = ("grounded", "captions", "text", "interleaved")
    for spec in specs:
        if spec.batch_size is None and spec.kind in INSTRUCT_SEQUENCES_PER_STEP and (
                recipe == "instruct" or spec.kind not in pretraining_kinds):
            spec.batch_size = max(1, round(INSTRUCT_SEQUENCES_PER_STEP[spec.kind] * scale))
