"""The recipes' numbers, in one place: the paper's rows per step of each source (Kosmos-2 Tables 7 and 8), the
instruction-tuning schedule and the fine-tuning defaults. ``kosmos.train.plan`` is the only reader.

Instruction tuning (`kosmos train --recipe instruct --init MODEL`; Table 8): after pre-training, 10k steps at lr
1e-5 with 375 warm-up steps, each step holding 117 language-instruction, 351 vision-language-instruction, 1,404
grounded (GRIT pairs + grounded instruction data), 30 text and 15 interleaved sequences. Where the paper is silent
(docs/instruct.md, docs/decisions.md):

- the 117 language-instruction sequences are split evenly between Unnatural Instructions and FLAN, the 1,404
  grounded ones evenly between GRIT pairs (``grounded``) and `grit instruct` data (``grit_instruct``);
- smaller presets keep the paper's ratios: steps = the preset's pre-training steps x 10k/60k, warm-up 3.75% of
  them (375/10k), lr = the preset's pre-training lr x 1e-5/2e-4 (the paper preset gets exactly 10k, 375, 1e-5);
- ``--batch-size`` is the GRIT pairs' rows per step; every other source gets its Table 8 share of that.
"""
from __future__ import annotations

RECIPES = ("pretrain", "instruct")

# Sequences per step of each source kind: pre-training (Table 7: text 93, image-caption 1,117, grounded 1,117,
# interleaved 47) and instruction tuning (Table 8, split as the module docstring says).
SEQUENCES_PER_STEP = {
    "pretrain": {"text": 93, "captions": 1117, "grounded": 1117, "interleaved": 47},
    "instruct": {"unnatural": 58.5, "flan": 58.5, "llava": 351, "grounded": 702, "grit_instruct": 702, "text": 30,
                 "interleaved": 15},
}
PRETRAINING_KINDS = ("grounded", "captions", "text", "interleaved")

PAPER_STEPS, PAPER_WARMUP, PAPER_LR = 10_000, 375, 1e-5  # instruction tuning
PRETRAIN_STEPS, PRETRAIN_LR = 60_000, 2e-4

# Fine-tuning a pretrained model (--init): the paper's instruction-tuning scale, not a from-scratch lr.
FINETUNE_LR = 1e-5
FINETUNE_WARMUP_STEPS = 100


def paper_shares() -> dict[str, float]:
    """Rows of each source per grounded row in the paper's pre-training step (Table 7)."""
    table = SEQUENCES_PER_STEP["pretrain"]
    return {kind: n / table["grounded"] for kind, n in table.items()}


def instruct_schedule(preset) -> dict:
    """steps, warmup_steps and lr of the instruct recipe for a preset (the paper's, scaled by its ratios)."""
    steps = max(1, round(preset.max_steps * PAPER_STEPS / PRETRAIN_STEPS))
    return {"steps": steps, "warmup_steps": max(1, round(steps * PAPER_WARMUP / PAPER_STEPS)),
            "lr": preset.lr * PAPER_LR / PRETRAIN_LR}


def finetune_schedule() -> dict:
    """Defaults of fine-tuning an --init model (the pretrain recipe on a pretrained model)."""
    return {"lr": FINETUNE_LR, "warmup_steps": FINETUNE_WARMUP_STEPS, "location_loss_weight": 1.0,
            "location_sigma": 0.0, "decay_fraction": 1.0}


def batch_size_of(kind: str, kinds: list[str], batch_size: int, recipe: str,
                  preset_shares: dict | None) -> tuple[int, str]:
    """Rows per step of a source given without ``:BATCH``, and where the number comes from.

    An instruction source (and under the instruct recipe text and interleaved too) gets its Table 8 share of
    ``batch_size`` GRIT rows ("recipe"). Every other source gets its share of the pre-training step, the
    preset's (``Preset.mixture_shares``, "preset") or Table 7's ("paper"): the kind with the largest share among
    ``kinds`` (the mixture's) gets ``batch_size`` rows, every other its proportion of that, at least one."""
    instruct = SEQUENCES_PER_STEP["instruct"]
    if kind in instruct and (recipe == "instruct" or kind not in PRETRAINING_KINDS):
        return max(1, round(instruct[kind] * batch_size / instruct["grounded"])), "recipe"
    shares = preset_shares or paper_shares()
    top = max((shares[k] for k in kinds if k in shares), default=1.0)
    return max(1, round(shares[kind] / top * batch_size)), "preset" if preset_shares else "paper"


def default_batch_sizes(specs: list, batch_size: int, shares: dict[str, float] | None = None) -> list:
    """``SourceSpec``s with unset batch sizes filled as a pre-training plan fills them (``shares``: the preset's,
    default Table 7's); new specs, the given ones unchanged."""
    from dataclasses import replace

    kinds = [spec.kind for spec in specs]
    return [spec if spec.batch_size is not None else
            replace(spec, batch_size=batch_size_of(spec.kind, kinds, batch_size, "pretrain", shares)[0])
            for spec in specs]
