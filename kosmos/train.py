"""``kosmos train``: a training loop you can read top to bottom (nanoGPT style).

One process (CPU or one GPU) or, with ``num_workers > 1`` / ``ray_address``, Ray Train's ``TorchTrainer``
running the same loop on every worker under DistributedDataParallel.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from kosmos import checkpoint as ckpt
from kosmos.data import DataConfig, GritShardStream, expand_urls, iter_records, make_loader
from kosmos.modeling import CONNECTORS, VISION_POSITION_INITS, connector_of, load_pretrained
from kosmos.presets import PRESETS, build_model, count_parameters, get_preset


DATA, RUN = "data", "run"

# Fine-tuning a pretrained model (--init): the paper's instruction-tuning scale, not a from-scratch lr.
FINETUNE_LR = 1e-5
FINETUNE_WARMUP_STEPS = 100
# Location tokens are 2 of ~10 targets in a one-object caption; at weight 1 the text loss dominates and the
# model learns to ignore the image (issue 15's diagnosis). 10 was measured to learn localisation on CPU.
DEFAULT_LOCATION_LOSS_WEIGHT = 10.0
# A 1,024-way classification learns each cell separately; a Gaussian target of 1.5 cells shares the gradient
# with the neighbours: on the level-1 world the location loss fell about twice as fast per step.
DEFAULT_LOCATION_SIGMA = 1.5


@dataclass
class TrainConfig:
    """Everything ``kosmos train`` takes. Each field is one setting with one default; its flag and help text
    are generated from it (``grit_pipeline.config_flags``): a new setting is a field with
    ``metadata={"help": ...}``. How samples become sequences is ``data_options`` (``DataConfig`` fields)."""

    data: list[str] = field(metadata={
        "nargs": "+", "help": "shards: local directories or globs, {00000..00099} patterns, or shard URLs "
        "(http/s3/pipe:; remote shards are listed explicitly or with a brace pattern)"})
    output: str = field(metadata={"help": "run directory (processor/, checkpoints/, train_log.jsonl)"})
    preset: str = field(default="tiny", metadata={"choices": tuple(sorted(PRESETS)), "help": "model size"})
    init: str | None = field(default=None, metadata={
        "help": "pretrained model + processor directory (from_pretrained) to fine-tune; fine-tuning defaults: "
                f"lr {FINETUNE_LR:g}, {FINETUNE_WARMUP_STEPS} warm-up steps, location loss weight 1"})
    connector: str | None = field(default=None, metadata={
        "choices": CONNECTORS,
        "help": "image connector of a from-scratch model: linear (one slot per ViT token) or resampler "
                "(Kosmos-2's); default: the preset's (linear for tiny/small, resampler for paper)"})
    vision_position_init: str = field(default="sincos2d", metadata={
        "choices": VISION_POSITION_INITS,
        "help": "how a from-scratch ViT's position embeddings start: sincos2d (a 2D sine-cosine code of the patch "
                "centres, which learns to localise faster) or random (transformers' initialisation)"})
    location_loss_weight: float | None = field(default=None, metadata={
        "help": f"weight of location-token targets in the loss (default {DEFAULT_LOCATION_LOSS_WEIGHT:g} from "
                "scratch, 1 with --init)"})
    location_sigma: float | None = field(default=None, metadata={
        "help": f"train location tokens against a 2D Gaussian of this many cells around the target cell "
                f"(0: the exact cell only, the paper's loss; default {DEFAULT_LOCATION_SIGMA:g} from scratch, "
                "0 with --init)"})
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
    steps: int | None = field(default=None, metadata={"help": "optimiser steps (preset default; paper 60000)"})
    batch_size: int | None = field(default=None, metadata={
        "help": "samples per worker per micro-step (preset default)"})
    grad_accum: int = field(default=1, metadata={"help": "micro-steps per optimiser step"})
    lr: float | None = field(default=None, metadata={"help": "peak learning rate (preset default; paper 2e-4)"})
    warmup_steps: int | None = field(default=None, metadata={
        "help": "linear warm-up steps (preset default; paper 375)"})
    min_lr_ratio: float = field(default=0.0, metadata={
        "help": "final lr / peak lr: the linear decay ends at lr * this"})
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
    loader_workers: int = field(default=1, metadata={"group": RUN, "help": "DataLoader processes per worker"})
    device: str = field(default="auto", metadata={"group": RUN, "help": "auto | cpu | cuda | cuda:N"})
    precision: str = field(default="auto", metadata={
        "group": RUN, "choices": ("auto", "bf16", "fp32"), "help": "auto: bf16 autocast on GPU, fp32 on CPU"})
    num_workers: int = field(default=1, metadata={"group": RUN, "help": "Ray Train workers (>1 runs on Ray)"})
    use_gpu: bool = field(default=False, metadata={"group": RUN, "help": "one GPU per Ray Train worker"})
    ray_address: str | None = field(default=None, metadata={
        "group": RUN, "help": "Ray cluster address (e.g. auto or ray://host:10001)"})
    threads: int | None = field(default=None, metadata={
        "group": RUN, "help": "torch CPU threads (default: torch's choice)"})
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
            "location_loss_weight": (0, False), "location_sigma": (0, True), "max_minutes": (0, False)}
        problems = []
        for name, (low, inclusive) in rules.items():
            value = getattr(self, name)
            if value is not None and not (finite(value) and (value >= low if inclusive else value > low)):
                problems.append(f"--{name.replace('_', '-')} must be a finite number "
                                f"{'>=' if inclusive else '>'} {low}, got {value!r}")
        if not (all(finite(b) and 0 <= b < 1 for b in self.betas)):
            problems.append(f"--betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.min_lr_ratio is not None and finite(self.min_lr_ratio) and self.min_lr_ratio > 1:
            problems.append(f"--min-lr-ratio must be at most 1, got {self.min_lr_ratio!r}")
        return problems

    def resolved(self) -> "TrainConfig":
        """Unset values filled: the preset's from scratch, fine-tuning defaults with ``init``."""
        preset = get_preset(self.preset)
        values = asdict(self)
        if self.init:
            defaults = (("steps", preset.max_steps), ("batch_size", preset.batch_size), ("lr", FINETUNE_LR),
                        ("warmup_steps", FINETUNE_WARMUP_STEPS), ("location_loss_weight", 1.0),
                        ("location_sigma", 0.0))
        else:
            defaults = (("steps", preset.max_steps), ("batch_size", preset.batch_size), ("lr", preset.lr),
                        ("warmup_steps", preset.warmup_steps),
                        ("location_loss_weight", DEFAULT_LOCATION_LOSS_WEIGHT),
                        ("location_sigma", DEFAULT_LOCATION_SIGMA))
        for name, default in defaults:
            if values[name] is None:
                values[name] = default
        values["warmup_steps"] = min(values["warmup_steps"], values["steps"])
        return TrainConfig(**values)


def lr_factor(step: int, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then linear decay to ``min_ratio`` at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / (total - warmup))
    return min_ratio + (1.0 - min_ratio) * (1.0 - progress)


def location_soft_targets(tokenizer, sigma: float, grid: int = 32):
    """(ids of ``<patch_index_0000..>`` in cell order, (cells x cells) target distributions): for a target
    cell, a 2D Gaussian of ``sigma`` cells around it over the location tokens, so neighbouring cells share
    the gradient (a box one cell off is nearly as good as the exact one)."""
    vocab = tokenizer.get_vocab()
    ids = torch.tensor([vocab[f"<patch_index_{i:04d}>"] for i in range(grid * grid)])
    rows, cols = torch.arange(grid * grid) // grid, torch.arange(grid * grid) % grid
    d2 = (rows[:, None] - rows[None, :]).float() ** 2 + (cols[:, None] - cols[None, :]).float() ** 2
    kernel = torch.exp(-d2 / (2 * sigma * sigma))
    return ids, kernel / kernel.sum(-1, keepdim=True)


def location_token_mask(tokenizer) -> torch.Tensor:
    """Boolean lookup over the vocabulary: True for ``<patch_index_NNNN>`` ids."""
    vocab = tokenizer.get_vocab()
    lookup = torch.zeros(max(len(tokenizer), max(vocab.values()) + 1), dtype=torch.bool)
    for token, index in vocab.items():
        if token.startswith("<patch_index_"):
            lookup[index] = True
    return lookup


@dataclass
class SequenceLosses:
    """One batch's next-token losses. ``objective`` is what is optimised (location targets weighted);
    the rest are detached sums and counts for the log."""

    objective: torch.Tensor
    loss_sum: torch.Tensor      # unweighted cross entropy over every target
    loc_sum: torch.Tensor       # over location-token targets
    loc_correct: torch.Tensor   # location targets whose argmax is right
    loc_n: torch.Tensor
    n: torch.Tensor


def sequence_losses(logits: torch.Tensor, labels: torch.Tensor, location_lookup: torch.Tensor,
                    location_weight: float = 1.0, soft_targets=None) -> SequenceLosses:
    """Next-token cross entropy over the targets (labels != -100), location-token targets weighted
    ``location_weight``: objective = sum(w_i * loss_i) / sum(w_i). With ``soft_targets`` (from
    ``location_soft_targets``) a location target's loss in the objective is the cross entropy against its
    Gaussian neighbourhood; the logged location loss stays the exact-cell cross entropy."""
    logits = logits[:, :-1].float()
    targets = labels[:, 1:].reshape(-1)
    flat = logits.reshape(-1, logits.size(-1))
    per_token = F.cross_entropy(flat, targets, ignore_index=-100, reduction="none")
    valid = targets != -100
    loc = valid & location_lookup.to(targets.device)[targets.clamp(min=0)]
    weights = valid.float() + (location_weight - 1.0) * loc.float()
    trained = per_token
    if soft_targets is not None and bool(loc.any()):
        ids, kernel = (t.to(flat.device) for t in soft_targets)
        cell_of_id = torch.full((flat.size(-1),), -1, dtype=torch.long, device=flat.device)
        cell_of_id[ids] = torch.arange(ids.numel(), device=flat.device)
        log_probs = F.log_softmax(flat[loc], dim=-1)[:, ids]
        soft = -(kernel[cell_of_id[targets[loc]]] * log_probs).sum(-1)
        trained = per_token.clone()
        trained[loc] = soft
    objective = (trained * weights).sum() / weights.sum().clamp(min=1e-6)
    with torch.no_grad():
        loc_correct = (flat[loc].argmax(-1) == targets[loc]).sum()
    return SequenceLosses(objective, per_token.detach().sum(), per_token[loc].detach().sum(), loc_correct,
                          loc.sum(), valid.sum())


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast_for(device: torch.device, precision: str):
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if precision != "fp32":
        raise ValueError(f"precision must be auto, bf16 or fp32, got {precision!r}")
    return nullcontext()


# --------------------------------------------------------------------------- setup (driver side)

def prepare_processor(cfg: TrainConfig, log=print):
    """The processor to train with: a resumed run's, ``--init``'s, ``--tokenizer``'s, or a new one learnt
    from the shards' captions (saved to OUTPUT/processor either way)."""
    from kosmos.tokenizer import build_processor, load_processor, train_tokenizer

    out = Path(cfg.output) / "processor"
    if cfg.resume and out.exists():
        return load_processor(out)
    if cfg.init or cfg.tokenizer:
        processor = load_processor(cfg.init or cfg.tokenizer)
    else:
        preset = get_preset(cfg.preset)
        counters: dict[str, int] = {}
        captions = []
        for record in iter_records(expand_urls(cfg.data), counters):
            captions.append(record["caption"])
            if len(captions) >= cfg.tokenizer_samples:
                break
        log(f"learning a {preset.tokenizer_vocab}-token BPE tokenizer on {len(captions)} captions")
        processor = build_processor(train_tokenizer(captions, preset.tokenizer_vocab), preset.image_size)
    processor.save_pretrained(out)
    return processor


def build_or_load_model(cfg: TrainConfig, processor, resume_dir: Path | None):
    # safetensors only, as kosmos predict: a pytorch_model.bin is a pickle, and loading one could run code
    if resume_dir is not None:
        return load_pretrained(resume_dir / "model", use_safetensors=True)
    if cfg.init:
        model = load_pretrained(cfg.init, use_safetensors=True)
        if len(processor.tokenizer) > model.config.text_config.vocab_size:
            raise ValueError(f"--init {cfg.init}: the processor has {len(processor.tokenizer)} tokens, the model "
                             f"{model.config.text_config.vocab_size}")
        return model
    tok = processor.tokenizer
    return build_model(get_preset(cfg.preset), len(tok), seed=cfg.seed, connector=cfg.connector,
                       vision_position_init=cfg.vision_position_init,
                       pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)


def find_resume_dir(cfg: TrainConfig) -> Path | None:
    if not cfg.resume:
        return None
    if cfg.resume == "latest":
        return ckpt.latest_checkpoint(Path(cfg.output) / "checkpoints")
    path = Path(cfg.resume)
    if not (path / "state.pt").exists():
        raise FileNotFoundError(f"--resume {path}: no state.pt there")
    return path


def configure_optimizer(model, cfg: TrainConfig):
    """AdamW; weight decay on matrices only (biases, norms and embeddings' 1-d params undecayed)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=1e-6)


# --------------------------------------------------------------------------- the loop

def run_training(cfg: TrainConfig, processor, rank: int = 0, world_size: int = 1, device=None,
                 log=print) -> dict[str, Any]:
    """Train; returns a summary. Works alone or inside a torch.distributed process group."""
    cfg = cfg.resolved()
    device = device or resolve_device(cfg.device)
    distributed = world_size > 1
    is_main = rank == 0
    out = Path(cfg.output)
    resume_dir = find_resume_dir(cfg)
    state = ckpt.load_state(resume_dir) if resume_dir else None

    model = build_or_load_model(cfg, processor, resume_dir).to(device)
    config = model.config
    data_config = DataConfig(image_size=config.vision_config.image_size,
                             num_image_tokens=config.latent_query_num, seed=cfg.seed,
                             max_length=get_preset(cfg.preset).max_length)
    for key, value in cfg.data_options.items():
        if key in ("image_size", "num_image_tokens") or not hasattr(data_config, key):
            raise ValueError(f"data option {key!r} cannot be set (image size and slots come from the model)")
        setattr(data_config, key, value)
    if is_main:
        log(f"model: {count_parameters(model) / 1e6:.2f}M parameters, image {data_config.image_size}px, "
            f"{data_config.num_image_tokens} image slots ({connector_of(config)} connector), "
            f"vocab {config.text_config.vocab_size}, device {device}")

    optimizer = configure_optimizer(model, cfg)
    # With --max-minutes the linear decay ends when the time budget does (or at --steps if that comes first).
    clock = {"fraction": 0.0}

    def schedule(s: int) -> float:
        factor = lr_factor(s, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)
        if s >= cfg.warmup_steps and clock["fraction"] > 0:
            factor = min(factor, cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * max(0.0, 1.0 - clock["fraction"]))
        return factor

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    step, consumed_batches, readers = 0, 0, {}
    if state is not None:
        saved = state.get("config", {})
        for name in ("num_workers", "loader_workers", "batch_size", "grad_accum", "seed"):
            if name in saved and saved[name] != getattr(cfg, name):
                raise ValueError(f"cannot resume exactly with --{name.replace('_', '-')} {getattr(cfg, name)}: "
                                 f"the checkpoint was written with {saved[name]}")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = state["step"]
        consumed_batches = state["consumed_batches"]
        readers = state["readers"][rank] if rank < len(state["readers"]) else {}
        ckpt.set_rng_state(state["rng"][rank] if rank < len(state["rng"]) else state["rng"][0])
        if is_main:
            log(f"resumed from {resume_dir} at step {step}")
    train_model = model
    if distributed:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    num_readers = max(cfg.loader_workers, 1)
    stream = GritShardStream(expand_urls(cfg.data), processor, data_config, cfg.batch_size, rank=rank,
                             world_size=world_size, num_workers=cfg.loader_workers, reader_states=readers,
                             worker_offset=consumed_batches % num_readers)
    batches = iter(make_loader(stream, cfg.loader_workers))
    location_lookup = location_token_mask(processor.tokenizer).to(device)
    soft_targets = None
    if cfg.location_sigma > 0:
        soft_targets = tuple(t.to(device) for t in location_soft_targets(processor.tokenizer, cfg.location_sigma))
    log_path, eval_log_path = out / "train_log.jsonl", out / "eval_log.jsonl"
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        _truncate_log(log_path, step)
        _truncate_log(eval_log_path, step)

    evaluator = RecEvaluator.from_config(cfg, processor) if cfg.eval_every > 0 and is_main else None
    best = _read_best(out) if evaluator else None

    model.train()
    last_stop = cfg.steps if cfg.stop_at_step is None else min(cfg.steps, cfg.stop_at_step)
    window = _new_window()
    skipped: dict[str, int] = {}
    started = time.perf_counter()
    out_of_time = False
    while step < last_stop and not out_of_time:
        # one optimiser step = grad_accum micro-batches
        for micro in range(cfg.grad_accum):
            batch = next(batches)
            consumed_batches += 1
            readers[batch["reader"]] = batch["reader_state"]
            inputs = {k: batch[k].to(device, non_blocking=True) for k in
                      ("input_ids", "attention_mask", "image_embeds_position_mask", "pixel_values")}
            labels = batch["labels"].to(device)
            sync = nullcontext() if not distributed or micro == cfg.grad_accum - 1 else train_model.no_sync()
            with sync:
                with autocast_for(device, cfg.precision):
                    logits = train_model(**inputs).logits
                losses = sequence_losses(logits, labels, location_lookup, cfg.location_loss_weight, soft_targets)
                (losses.objective / cfg.grad_accum).backward()
            for key in ("loss_sum", "loc_sum", "loc_correct", "loc_n", "n"):
                window[key] += float(getattr(losses, key))
            window["tokens"] += int(batch["attention_mask"].sum())
            window["samples"] += batch["input_ids"].size(0)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip) if cfg.grad_clip > 0 else None
        optimizer.step()
        if cfg.max_minutes:
            # the same value on every rank, so every replica steps with the same lr and stops at the same step
            clock["fraction"] = _max_across((time.perf_counter() - started) / (60.0 * cfg.max_minutes),
                                            distributed, device)
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        window["steps"] += 1
        out_of_time = clock["fraction"] >= 1.0
        at_end = step == last_stop or out_of_time

        if step % cfg.log_every == 0 or at_end:
            stats = _reduce_window(window, distributed, device)
            elapsed = time.perf_counter() - window["time"]
            skipped = _sum_skipped(readers, distributed)
            text_n = stats["n"] - stats["loc_n"]
            entry = {
                "step": step,
                "loss": round(stats["loss_sum"] / stats["n"], 6) if stats["n"] else None,
                "text_loss": round((stats["loss_sum"] - stats["loc_sum"]) / text_n, 6) if text_n else None,
                "loc_loss": round(stats["loc_sum"] / stats["loc_n"], 6) if stats["loc_n"] else None,
                "loc_acc": round(stats["loc_correct"] / stats["loc_n"], 4) if stats["loc_n"] else None,
                "lr": scheduler.get_last_lr()[0],
                "grad_norm": round(float(grad_norm), 4) if grad_norm is not None else None,
                "tokens_per_s": round(stats["tokens"] / elapsed, 1),
                "samples_per_s": round(stats["samples"] / elapsed, 2),
                "skipped": skipped,
            }
            if is_main:
                log(f"step {step}/{cfg.steps} loss {entry['loss']} text {entry['text_loss']} loc {entry['loc_loss']} "
                    f"loc acc {entry['loc_acc']} lr {entry['lr']:.2e} {entry['tokens_per_s']:.0f} tok/s "
                    f"{entry['samples_per_s']:.1f} img/s")
                with open(log_path, "a") as handle:
                    handle.write(json.dumps(entry) + "\n")
            window = _new_window()

        if evaluator is not None and (step % cfg.eval_every == 0 or at_end):
            result = evaluator.evaluate(model)
            model.train()
            entry = {"step": step, "eval_rec": round(result["accuracy"], 2), "eval_total": result["total"],
                     "eval_no_box": result["no_box"]}
            improved = best is None or entry["eval_rec"] > best["eval_rec"]
            if improved:
                best = entry
                _save_best(out, model, processor, entry)
            log(f"step {step} held-out REC {entry['eval_rec']}% of {entry['eval_total']}"
                f"{' (best so far, saved to best/)' if improved else ''}")
            with open(eval_log_path, "a") as handle:
                handle.write(json.dumps(entry) + "\n")

        if step % cfg.checkpoint_every == 0 or at_end:
            all_readers = _gather(readers, distributed)
            all_rng = _gather(ckpt.rng_state(), distributed)
            if is_main:
                path = ckpt.save_checkpoint(out / "checkpoints", step, model, processor, {
                    "step": step, "consumed_batches": consumed_batches, "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "rng": all_rng, "readers": all_readers,
                    "config": asdict(cfg),
                }, keep=cfg.keep_checkpoints)
                log(f"checkpoint {path}")
            if distributed:
                torch.distributed.barrier()
    summary = {"step": step, "finished": step >= cfg.steps, "skipped": skipped,
               "parameters": count_parameters(model), "minutes": round((time.perf_counter() - started) / 60, 2)}
    if best is not None:
        summary["best"] = best
    return summary


def _new_window() -> dict:
    return {"loss_sum": 0.0, "loc_sum": 0.0, "loc_correct": 0.0, "loc_n": 0.0, "n": 0.0, "tokens": 0,
            "samples": 0, "steps": 0, "time": time.perf_counter()}


def _max_across(value: float, distributed: bool, device) -> float:
    """The largest of the ranks' values (``value`` itself in one process)."""
    if not distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return float(tensor.item())


class RecEvaluator:
    """Held-out REC during training: the ``kosmos predict rec`` prompts and decoding, scored in memory."""

    def __init__(self, annotations: dict, images_dir: str, processor, limit: int, path: str = "--eval-data"):
        from kosmos.evalfiles import coco_entries
        from kosmos.predict import build_queries

        images, self.truth = coco_entries(annotations, path)
        self.images = images[:limit]
        self.queries = build_queries("rec", images_dir, {"images": self.images})
        self.processor = processor

    @classmethod
    def from_config(cls, cfg: TrainConfig, processor) -> "RecEvaluator":
        from kosmos.evalfiles import load_json

        if not cfg.eval_data:
            raise ValueError("--eval-every needs --eval-data (an MDETR RefCOCO json)")
        path = Path(cfg.eval_data)
        if path.is_dir():  # a `kosmos synth-refcoco` output folder
            found = sorted(path.glob("finetune_refcoco*.json"))
            if not found:
                raise ValueError(f"--eval-data {path}: no finetune_refcoco*.json there")
            path = found[0]
        images = cfg.eval_images or str(path.parent / "images")
        return cls(load_json(path, "--eval-data"), images, processor, limit=cfg.eval_limit, path=str(path))

    def evaluate(self, model) -> dict:
        """REC accuracy (percent) of ``model`` on the held-out expressions (the whole image shown)."""
        from kosmos.metrics import rec_accuracy
        from kosmos.predict import generate

        model.eval()
        predictions = {row["id"]: row for row in generate(model, self.processor, self.queries, image_mode="square")}
        return rec_accuracy(predictions, self.images, self.truth)


BEST = "best"


def _read_best(out: Path) -> dict | None:
    path = out / BEST / "best.json"
    return json.loads(path.read_text()) if path.exists() else None


def _save_best(out: Path, model, processor, entry: dict) -> None:
    """Replace OUTPUT/best (model + processor + best.json) atomically."""
    import shutil

    tmp = out / f"{BEST}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    (tmp / "best.json").write_text(json.dumps(entry))
    old = out / f"{BEST}.old-{os.getpid()}"
    if (out / BEST).exists():
        os.replace(out / BEST, old)
    os.replace(tmp, out / BEST)
    shutil.rmtree(old, ignore_errors=True)


def _reduce_window(window: dict, distributed: bool, device) -> dict:
    keys = ("loss_sum", "loc_sum", "loc_correct", "loc_n", "n", "tokens", "samples")
    values = torch.tensor([float(window[k]) for k in keys], dtype=torch.float64, device=device)
    if distributed:
        torch.distributed.all_reduce(values)
    return dict(zip(keys, values.tolist()))


def _gather(obj, distributed: bool) -> list:
    if not distributed:
        return [obj]
    out = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def _sum_skipped(readers: dict, distributed: bool) -> dict[str, int]:
    total: dict[str, int] = {}
    for rank_readers in _gather(readers, distributed):
        for reader_state in rank_readers.values():
            for reason, n in reader_state["skipped"].items():
                total[reason] = total.get(reason, 0) + n
    return total


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past ``step`` (a resumed run rewrites them), atomically."""
    if not path.exists():
        return
    lines = [l for l in path.read_text().splitlines() if l.strip() and json.loads(l)["step"] <= step]
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text("".join(l + "\n" for l in lines))
    os.replace(tmp, path)


def read_log(output: str | Path, name: str = "train_log.jsonl") -> list[dict]:
    """The training log's entries (``name="eval_log.jsonl"``: the held-out REC evaluations)."""
    path = Path(output) / name
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()] if path.exists() else []


# --------------------------------------------------------------------------- entry points

def train(cfg: TrainConfig, log=print) -> dict[str, Any]:
    """Prepare the processor on the driver, then train here or on Ray workers."""
    problems = cfg.number_problems()
    if problems:
        raise ValueError("; ".join(problems))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    resume_dir = find_resume_dir(cfg)
    if resume_dir is not None:  # a crafted state.pt is refused here in one line, before any worker starts
        ckpt.check_state(resume_dir)
    processor = prepare_processor(cfg, log)
    if cfg.num_workers > 1 or cfg.ray_address:
        return train_with_ray(cfg, log)
    return run_training(cfg, processor, log=log)


def _ray_worker(loop_config: dict) -> None:
    import ray.train
    import ray.train.torch
    from kosmos.tokenizer import load_processor

    cfg = TrainConfig(**loop_config["config"])
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    processor = load_processor(Path(cfg.output) / "processor")
    log = (lambda message: print(message, flush=True)) if rank == 0 else (lambda message: None)
    summary = run_training(cfg, processor, rank=rank, world_size=world, device=device, log=log)
    ray.train.report({"step": summary["step"]})


def train_with_ray(cfg: TrainConfig, log=print) -> dict[str, Any]:
    """Run ``run_training`` on ``cfg.num_workers`` Ray Train workers (DDP; gloo on CPU, nccl on GPU).

    ``OUTPUT`` must be on storage every worker can reach (the checkpoints are written by rank 0).
    """
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cfg = TrainConfig(**{**asdict(cfg), "output": str(Path(cfg.output).resolve()),
                         "data": [_absolute(d) for d in cfg.data]})
    if not ray.is_initialized():
        ray.init(address=cfg.ray_address or "local", include_dashboard=False, log_to_driver=True,
                 runtime_env={"env_vars": {"NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1"}})
    trainer = TorchTrainer(
        _ray_worker,
        train_loop_config={"config": asdict(cfg)},
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu),
        run_config=RunConfig(name="kosmos-train", storage_path=str(Path(cfg.output) / "ray")),
    )
    result = trainer.fit()
    log(f"ray training finished: {result.metrics}")
    last = read_log(cfg.output)
    return {"step": last[-1]["step"] if last else 0, "ray_metrics": result.metrics}


def _absolute(spec: str) -> str:
    if "://" in spec or spec.startswith("pipe:"):
        return spec
    return ",".join(str(Path(p).resolve()) if not p.startswith("/") else p for p in spec.split(","))
