"""``kosmos train``'s settings: one dataclass and its flags generated from it. How unset values resolve (flag >
recipe > preset > paper > default) is ``kosmos.train.plan``."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from kosmos.modeling import CONNECTORS, FREEZE_VISION, LOCATION_EMBEDDING_INITS, VISION_POSITION_INITS
from kosmos.presets import PRESETS, get_preset, image_slots
from kosmos.train.recipes import FINETUNE_LR, FINETUNE_WARMUP_STEPS

DATA, RUN = "data", "run"

# Location tokens are 2 of ~10 targets in a one-object caption; at weight 1 the text loss dominates and the
# model learns to ignore the image (issue 15's diagnosis). 10 was measured to learn localisation on CPU.
DEFAULT_LOCATION_LOSS_WEIGHT = 10.0
# A 1,024-way classification learns each cell separately; a Gaussian target of 1.5 cells shares the gradient
# with the neighbours: on the level-1 world the location loss fell about twice as fast per step.
DEFAULT_LOCATION_SIGMA = 1.5
# --max-minutes without --steps: the time budget alone ends the run (and sets the lr decay)
TIME_BUDGET_STEPS = 10**9
REPORTERS = ("none", "tensorboard", "wandb")


@dataclass
class TrainConfig:
    """Everything ``kosmos train`` takes. Each field is one setting with one default; its flag and help text
    are generated from it (``grit_pipeline.config_flags``): a new setting is a field with
    ``metadata={"help": ...}``. How samples become sequences is ``data_options`` (``DataConfig`` fields)."""

    output: str = field(metadata={"help": "run directory (processor/, checkpoints/, train_log.jsonl)"})
    data: list[str] | None = field(default=None, metadata={
        "nargs": "+", "help": "GRIT shards (the grounded source alone): local directories or globs, {00000..00099} "
        "patterns, or shard URLs (http/s3/pipe:; remote shards are listed explicitly or with a brace pattern)"})
    mix: list[str] | None = field(default=None, metadata={
        "nargs": "+", "help": "sources of the training mixture (besides --data), one KIND=PATHS[:BATCH] each, KIND "
        "one of grounded, captions, text, interleaved (e.g. captions=shards/:16 text=corpus.jsonl); a source "
        "without :BATCH gets the paper's share of the step (docs/companion.md)"})
    source_weights: list[str] | None = field(default=None, metadata={
        "nargs": "+", "help": "loss weight of a mixture source's targets, KIND=WEIGHT each; the step's loss is the "
        "weighted mean over all targets; default 1 for every source, except text=0.25 interleaved=0.25 for the tiny "
        "and small presets from scratch (docs/companion.md)"})
    overwrite: bool = field(default=False, metadata={
        "group": RUN, "help": "start over in an OUTPUT that already holds a run (its files are replaced)"})
    preset: str = field(default="tiny", metadata={"choices": tuple(sorted(PRESETS)), "help": "model size"})
    init: str | None = field(default=None, metadata={
        "help": "pretrained model + processor directory (from_pretrained) to fine-tune; fine-tuning defaults: "
                f"lr {FINETUNE_LR:g}, {FINETUNE_WARMUP_STEPS} warm-up steps, location loss weight 1"})
    recipe: str = field(default="pretrain", metadata={
        "choices": ("pretrain", "instruct"),
        "help": "instruct: instruction tuning of --init (Kosmos-2 Table 8: 10k steps, lr 1e-5, 375 warm-up, the "
                "per-step composition; scaled for small presets, docs/instruct.md)"})
    image_size: int | None = field(default=None, metadata={
        "help": "a from-scratch model's image side in pixels (default: the preset's); with --patch-size it sets "
                "the image slots of the linear connector, (image_size / patch_size)^2 + 1"})
    patch_size: int | None = field(default=None, metadata={
        "help": "a from-scratch model's ViT patch side in pixels (default: the preset's); fewer patches, fewer "
                "image slots: more images fit in a sequence"})
    connector: str | None = field(default=None, metadata={
        "choices": CONNECTORS,
        "help": "image connector of a from-scratch model: linear (one slot per ViT token), merged (one slot per 2 x 2 "
                "ViT patches: a quarter of the slots) or resampler (Kosmos-2's); default: the preset's (tiny: merged; "
                "small: linear; paper: resampler)"})
    vision_position_init: str = field(default="sincos2d", metadata={
        "choices": VISION_POSITION_INITS,
        "help": "how a from-scratch ViT's position embeddings start: sincos2d (a 2D sine-cosine code of the patch "
                "centres, which learns to localise faster) or random (transformers' initialisation)"})
    location_embedding_init: str | None = field(default=None, metadata={
        "choices": LOCATION_EMBEDDING_INITS,
        "help": "how a from-scratch model's location-token embeddings (and LM-head rows, which they share) start: "
                "sincos2d (a 2D sine-cosine code of each cell's centre) or random (transformers'); default: the "
                "preset's (tiny: sincos2d; small, paper: random)"})
    vision_init: str | None = field(default=None, metadata={
        "help": "start a from-scratch model's ViT from a CLIP vision tower (hub id or save_pretrained directory of "
                "a CLIPModel or CLIPVisionModel, of the model's vision sizes), as the papers start from CLIP "
                "ViT-L/14; default: a ViT from scratch"})
    freeze_vision: str = field(default="none", metadata={
        "choices": FREEZE_VISION,
        "help": "all-but-last: the ViT's embeddings and every layer but its last stop training, as Kosmos-1 keeps "
                "CLIP (with --vision-init); none: everything trains"})
    location_loss_weight: float | None = field(default=None, metadata={
        "help": f"weight of location-token targets in the loss (default {DEFAULT_LOCATION_LOSS_WEIGHT:g} from "
                "scratch, 1 with --init)"})
    location_sigma: float | None = field(default=None, metadata={
        "help": f"train location tokens against a 2D Gaussian of this many cells around the target cell "
                f"(0: the exact cell only, the paper's loss; default {DEFAULT_LOCATION_SIGMA:g} from scratch, "
                "0 with --init)"})
    # A box one cell off is a miss for a small object (IoU < 0.5 for one 2-3 cells wide) and nearly right for a large
    # one; the level-1 misses are small objects one cell off. Off by default: on the level-1 worlds weight 4 below 12
    # cells stayed within the runs' spread (docs/companion.md).
    small_box_weight: float = field(default=1.0, metadata={
        "help": "location targets of a box s cells across (geometric mean of its sides, 32 x 32 grid) weigh "
                "clamp(--small-box-cells / s, 1, this) times more (1: every box the same, the paper's loss)"})
    small_box_cells: float = field(default=12.0, metadata={
        "help": "the box size in cells across below which --small-box-weight applies"})
    max_minutes: float | None = field(default=None, metadata={
        "group": RUN, "help": "stop (with a checkpoint) after this many minutes of training; the lr decay ends "
                              "with the budget; --resume continues with a new budget"})
    eval_data: str | None = field(default=None, metadata={
        "group": RUN, "help": "MDETR RefCOCO json (or a `kosmos synth-refcoco` folder) for held-out REC "
                              "during training; images in images/ beside it or --eval-images"})
    eval_images: str | None = field(default=None, metadata={"group": RUN, "help": "images folder of --eval-data"})
    eval_every: int = field(default=0, metadata={
        "group": RUN, "help": "held-out REC every N steps and at the end (0: off); the best model is kept in "
                              "OUTPUT/best"})
    eval_limit: int = field(default=200, metadata={"group": RUN, "help": "expressions of --eval-data per evaluation"})
    tokenizer: str | None = field(default=None, metadata={
        "help": "processor directory to reuse instead of learning a tokenizer"})
    tokenizer_samples: int = field(default=100_000, metadata={"help": "captions read to learn a tokenizer"})
    steps: int | None = field(default=None, metadata={
        "help": "optimiser steps (preset default; paper 60000; with --max-minutes and no --steps the time budget "
                "alone ends the run)"})
    batch_size: int | None = field(default=None, metadata={
        "help": "samples per worker per micro-step (preset default)"})
    grad_accum: int = field(default=1, metadata={"help": "micro-steps per optimiser step"})
    lr: float | None = field(default=None, metadata={"help": "peak learning rate (preset default; paper 2e-4)"})
    warmup_steps: int | None = field(default=None, metadata={
        "help": "linear warm-up steps (preset default; paper 375)"})
    min_lr_ratio: float = field(default=0.0, metadata={
        "help": "final lr / peak lr: the linear decay ends at lr * this"})
    decay_fraction: float | None = field(default=None, metadata={
        "help": "the lr stays at its peak after the warm-up until the last this much of the run (of the steps, or "
                "of --max-minutes), which decays linearly (1: decay from the warm-up on; preset default)"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (matrices only)"})
    betas: tuple[float, float] = field(default=(0.9, 0.98), metadata={"nargs": 2, "help": "AdamW betas"})
    grad_clip: float = field(default=1.0, metadata={"help": "max gradient norm (0: off)"})
    log_every: int = field(default=10, metadata={"group": RUN, "help": "steps between log lines"})
    checkpoint_every: int = field(default=500, metadata={"group": RUN, "help": "steps between checkpoints"})
    keep_checkpoints: int = field(default=2, metadata={"group": RUN, "help": "checkpoints kept on disk"})
    stop_at_step: int | None = field(default=None, metadata={
        "group": RUN, "help": "leave (with a checkpoint) at this step; --resume continues"})
    resume: str | None = field(default=None, metadata={
        "group": RUN, "nargs": "?", "const": "latest",
        "help": "continue from OUTPUT's latest checkpoint (or the checkpoint directory given)"})
    seed: int = field(default=0, metadata={"help": "seed of the model init, data order and sampling"})
    report_to: str = field(default="none", metadata={
        "group": RUN, "choices": REPORTERS,
        "help": "also log the train_log.jsonl series to tensorboard (event files in OUTPUT/tensorboard) or wandb "
                "(pip install wandb); none: train_log.jsonl only"})
    loader_workers: int = field(default=1, metadata={"group": RUN, "help": "DataLoader processes per worker"})
    device: str = field(default="auto", metadata={"group": RUN, "help": "auto | cpu | cuda | cuda:N"})
    precision: str = field(default="auto", metadata={
        "group": RUN, "choices": ("auto", "bf16", "fp32"), "help": "auto: bf16 autocast on GPU, fp32 on CPU"})
    num_workers: int = field(default=1, metadata={"group": RUN, "help": "Ray Train workers (>1 runs on Ray)"})
    use_gpu: bool = field(default=False, metadata={"group": RUN, "help": "one GPU per Ray Train worker"})
    ray_address: str | None = field(default=None, metadata={
        "group": RUN, "help": "Ray cluster address (e.g. auto or ray://host:10001)"})
    threads: int | None = field(default=None, metadata={
        "group": RUN,
        "help": "torch CPU threads (default on CPU: one per CPU left over by the --loader-workers processes, at "
                "least one; on GPU: torch's choice)"})
    data_options: dict = field(default_factory=dict, metadata={"cli": False})  # DataConfig fields, own flags

    def number_problems(self) -> list[str]:
        """Numeric settings out of range (e.g. ``--location-loss-weight nan``), as one line each."""
        finite = lambda v: isinstance(v, (int, float)) and math.isfinite(v)  # noqa: E731
        rules = {  # setting -> (lowest allowed value, whether the lowest itself is allowed)
            "steps": (1, True), "batch_size": (1, True), "grad_accum": (1, True), "warmup_steps": (0, True),
            "lr": (0, False), "min_lr_ratio": (0, True), "weight_decay": (0, True), "grad_clip": (0, True),
            "log_every": (1, True), "checkpoint_every": (1, True), "keep_checkpoints": (1, True),
            "stop_at_step": (1, True), "loader_workers": (0, True), "num_workers": (1, True), "threads": (1, True),
            "eval_every": (0, True), "eval_limit": (1, True), "tokenizer_samples": (1, True),
            "location_loss_weight": (0, False), "location_sigma": (0, True), "max_minutes": (0, False),
            "decay_fraction": (0, False), "small_box_weight": (1, True), "small_box_cells": (0, False),
            "image_size": (1, True), "patch_size": (1, True)}
        problems = []
        for name, (low, inclusive) in rules.items():
            value = getattr(self, name)
            if value is not None and not (finite(value) and (value >= low if inclusive else value > low)):
                problems.append(f"--{name.replace('_', '-')} must be a finite number "
                                f"{'>=' if inclusive else '>'} {low}, got {value!r}")
        if (self.image_size or self.patch_size) and (self.init or self.resume):
            problems.append("--image-size/--patch-size shape a from-scratch model: an --init or resumed model keeps "
                            "its own")
        if self.freeze_vision not in FREEZE_VISION:
            problems.append(f"--freeze-vision must be one of {', '.join(FREEZE_VISION)}, got {self.freeze_vision!r}")
        if self.vision_init and (self.init or self.resume):
            problems.append("--vision-init starts a from-scratch model's ViT: an --init or resumed model keeps its "
                            "own")
        preset = self.model_preset()
        side, patch = preset.image_size, preset.patch_size
        connector = self.connector or preset.connector
        if finite(side) and finite(patch) and side >= 1 and patch >= 1 and not (self.init or self.resume):
            slots = image_slots(side, patch, connector, preset.latent_query_num)
            if side % patch:
                problems.append(f"--image-size {side} must be a multiple of --patch-size {patch}")
            elif connector == "merged" and (side // patch) % 2:
                problems.append(f"--connector merged joins 2 x 2 patches: --image-size {side} in --patch-size "
                                f"{patch} patches makes an odd grid ({side // patch} x {side // patch})")
            elif slots + 4 > preset.max_positions:
                problems.append(f"--image-size {side} in --patch-size {patch} patches makes {slots} image slots: "
                                f"more than the {preset.name} preset's {preset.max_positions} positions hold")
        try:  # (a kind the mixture lacks is refused by the plan, which reads --mix)
            self.source_weight_map()
        except ValueError as error:
            problems.append(str(error))
        if self.recipe == "instruct" and not self.init:
            problems.append("--recipe instruct tunes a pretrained model: give it with --init MODEL")
        if not (all(finite(b) and 0 <= b < 1 for b in self.betas)):
            problems.append(f"--betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.min_lr_ratio is not None and finite(self.min_lr_ratio) and self.min_lr_ratio > 1:
            problems.append(f"--min-lr-ratio must be at most 1, got {self.min_lr_ratio!r}")
        if self.decay_fraction is not None and finite(self.decay_fraction) and self.decay_fraction > 1:
            problems.append(f"--decay-fraction must be at most 1, got {self.decay_fraction!r}")
        return problems

    def source_weight_map(self) -> dict[str, float]:
        """``--source-weights`` as {kind: weight} (ValueError naming a malformed entry)."""
        from kosmos.sources import SOURCES

        weights: dict[str, float] = {}
        for entry in self.source_weights or []:
            kind, sep, value = entry.partition("=")
            try:
                weight = float(value)
            except ValueError:
                weight = None
            if not sep or kind not in SOURCES or weight is None or not math.isfinite(weight) or weight < 0:
                raise ValueError(f"--source-weights {entry!r}: write KIND=WEIGHT, KIND one of {sorted(SOURCES)}, "
                                 "WEIGHT a finite number >= 0")
            weights[kind] = weight
        return weights

    def source_loss_weights(self) -> dict[str, float]:
        """Loss weight of each source kind named by ``--source-weights`` or the preset (the plan's; a kind named
        by neither weighs 1)."""
        from kosmos.train.plan import source_weight_origins

        scratch = not self.init and self.recipe == "pretrain"
        return {kind: w for kind, (w, _) in source_weight_origins(self, get_preset(self.preset), scratch).items()}

    def model_preset(self):
        """The preset of a from-scratch model, with ``--image-size``/``--patch-size`` applied."""
        from dataclasses import replace

        preset = get_preset(self.preset)
        return replace(preset, image_size=self.image_size or preset.image_size,
                       patch_size=self.patch_size or preset.patch_size, connector=self.connector or preset.connector)

    def resolved(self) -> "TrainConfig":
        """Unset values filled as the plan fills them (``kosmos.train.plan.resolve_settings``)."""
        from kosmos.train.plan import resolve_settings

        return resolve_settings(self)[0]


def source_specs(cfg: TrainConfig):
    """The mixture's ``SourceSpec``s as the plan makes them (for tools and tests; a run reads its plan)."""
    from kosmos.train.plan import make_plan

    return make_plan(cfg).specs()


def data_config(cfg: TrainConfig, model_config, preset=None):
    """The ``DataConfig`` of a run: image size and slots from the model, lengths from the preset, then the
    plan's data options."""
    from kosmos.sources import DataConfig

    config = DataConfig(image_size=model_config.vision_config.image_size,
                        num_image_tokens=model_config.latent_query_num, seed=cfg.seed,
                        max_length=(preset or get_preset(cfg.preset)).max_length,
                        sequence_length=model_config.text_config.max_position_embeddings)
    for key, value in cfg.data_options.items():
        if key in ("image_size", "num_image_tokens") or not hasattr(config, key):
            raise ValueError(f"data option {key!r} cannot be set (image size and slots come from the model)")
        setattr(config, key, value)
    if config.sequence_length > model_config.text_config.max_position_embeddings:
        raise ValueError(f"--sequence-length {config.sequence_length} is more than the model's "
                         f"{model_config.text_config.max_position_embeddings} positions")
    return config
