"""The training loop, read top to bottom (nanoGPT style): model, optimiser, the mixture's loaders, then per step
one batch of every source, one forward, one backward, a log line, sometimes an evaluation and a checkpoint.

The step's loss is the token mean over every target of every source's batch (location targets weighted), the
same number one batch holding all sources' rows would give; loss, tokens and samples are logged per source.
Works alone or inside a torch.distributed process group (Ray Train).
"""
from __future__ import annotations

import json
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from kosmos import checkpoint as ckpt
from kosmos.mix import Mixture
from kosmos.modeling import MixtureStep, connector_of, next_token_targets
from kosmos.presets import count_parameters
from kosmos.sequence import SequenceEncoder
from kosmos.train.config import TIME_BUDGET_STEPS, TrainConfig, data_config
from kosmos.train.losses import (autocast_for, decay_factor, location_soft_targets, location_token_mask, lr_factor,
                                     resolve_device, target_losses, target_weights)
from kosmos.train.plan import TrainPlan
from kosmos.train.report import Reporter
from kosmos.train.runfiles import read_best, save_best, truncate_log
from kosmos.train.setup import build_or_load_model, configure_optimizer, find_resume_dir

LOGGED = ("loss_sum", "loc_sum", "loc_correct", "loc_n", "n", "tokens", "samples")


def run_training(plan: TrainPlan, processor, rank: int = 0, world_size: int = 1, device=None,
                 log=print) -> dict[str, Any]:
    """Train as ``plan`` says; returns a summary."""
    cfg = plan.config
    device = device or resolve_device(cfg.device)
    distributed, is_main = world_size > 1, rank == 0
    resume_dir = find_resume_dir(cfg)

    # ---- model, data, optimiser, schedule (a resumed run: where its checkpoint left them)
    model = build_or_load_model(cfg, processor, resume_dir).to(device)
    config = data_config(cfg, model.config)
    labels = [source.label for source in plan.sources]
    source_scales = [source.loss_weight for source in plan.sources]
    if is_main:
        log(f"model: {count_parameters(model) / 1e6:.2f}M parameters, image {config.image_size}px, "
            f"{config.num_image_tokens} image slots ({connector_of(model.config)} connector), "
            f"vocab {model.config.text_config.vocab_size}, device {device}")
    optimizer = configure_optimizer(model, cfg)
    budget = TimeBudget(cfg, distributed, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, budget.lr_factor)
    step, sources_state = resume(resume_dir, optimizer, scheduler, rank)
    if is_main and resume_dir is not None:
        log(f"resumed from {resume_dir} at step {step}")
    step_model = for_ranks(MixtureStep(model, targets_only=True), distributed, device)
    encoder = SequenceEncoder(processor, config.num_image_tokens, config.image_size, config.image_mode)
    mixture = Mixture(plan.specs(), encoder, config, rank=rank, world_size=world_size,
                      loader_workers=cfg.loader_workers, state=sources_state)
    location_lookup = location_token_mask(processor.tokenizer).to(device)
    soft_targets = None
    if cfg.location_sigma > 0:
        soft_targets = tuple(t.to(device) for t in location_soft_targets(processor.tokenizer, cfg.location_sigma))
    logs = RunLogs(plan, step) if is_main else None
    evaluation = HeldOutEvaluation(cfg, processor) if cfg.eval_every > 0 and is_main else None

    # ---- the loop
    model.train()
    last_stop = cfg.steps if cfg.stop_at_step is None else min(cfg.steps, cfg.stop_at_step)
    window = new_window(labels)
    skipped: dict[str, dict[str, int]] = {}
    budget.start()
    while step < last_stop and not budget.spent:
        for micro in range(cfg.grad_accum):  # one optimiser step = grad_accum micro-steps of the whole mixture
            batches = mixture.next_step()
            on_device = [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in b.items()}
                         for b in batches.values()]
            # every target of the step weighs the same, whichever source it comes from (times its source's weight)
            weights = [target_weights(b["labels"], location_lookup, cfg.location_loss_weight, cfg.small_box_cells,
                                      cfg.small_box_weight) for b in on_device]
            weight_total = sum(scale * float(w.sum()) for scale, w in zip(source_scales, weights))
            sync = nullcontext() if not distributed or micro == cfg.grad_accum - 1 else step_model.no_sync()
            with sync:
                with autocast_for(device, cfg.precision):
                    all_logits = step_model(on_device)
                objective = 0.0
                for label, batch, logits, scale, weight in zip(batches, on_device, all_logits, source_scales, weights):
                    where, targets = next_token_targets(batch["labels"])
                    losses = target_losses(logits, targets, location_lookup, cfg.location_loss_weight, soft_targets,
                                           weight[where])
                    objective = objective + scale * losses.weighted_sum / max(weight_total, 1e-6)
                    for key in LOGGED[:5]:
                        window[label][key] += float(getattr(losses, key))
                    window[label]["tokens"] += int(batch["attention_mask"].sum())
                    window[label]["samples"] += batch["input_ids"].size(0)
                (objective / cfg.grad_accum).backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip) if cfg.grad_clip > 0 else None
        optimizer.step()
        budget.measure()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        window["steps"] += 1
        at_end = step == last_stop or budget.spent

        if step % cfg.log_every == 0 or at_end:
            skipped = sum_skipped(mixture.skipped(), distributed)
            entry = log_entry(step, window, labels, distributed, device, scheduler, grad_norm, skipped)
            if is_main:
                log(log_line(entry, budget.progress(step)))
                logs.train(entry)
            window = new_window(labels)
        if evaluation is not None and (step % cfg.eval_every == 0 or at_end):
            logs.eval(evaluation.evaluate(model, step, log))
            model.train()
        if step % cfg.checkpoint_every == 0 or at_end:
            save_checkpoint(cfg, step, model, processor, optimizer, scheduler, mixture, distributed, log)
    if logs is not None:
        logs.close()
    summary = {"step": step, "finished": step >= cfg.steps, "skipped": skipped,
               "parameters": count_parameters(model), "minutes": round(budget.minutes_spent(), 2)}
    if evaluation is not None and evaluation.best is not None:
        summary["best"] = evaluation.best
    return summary


# --------------------------------------------------------------------------- the loop's helpers, in its order

def resume(resume_dir: Path | None, optimizer, scheduler, rank: int) -> tuple[int, dict | None]:
    """Optimiser, schedule, RNG and this rank's source positions from the checkpoint: (step, sources' state).
    (Whether the checkpoint may be resumed with these settings the driver checked against its plan.)"""
    if resume_dir is None:
        return 0, None
    state = ckpt.load_state(resume_dir)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    ckpt.set_rng_state(state["rng"][rank] if rank < len(state["rng"]) else state["rng"][0])
    return state["step"], state["sources"][rank] if rank < len(state["sources"]) else {}


class TimeBudget:
    """``--max-minutes``: the share of the budget spent, the same on every rank (every replica steps with the
    same lr and stops at the same step); the linear lr decay ends when the budget does."""

    def __init__(self, cfg: TrainConfig, distributed: bool, device):
        self.cfg, self.distributed, self.device = cfg, distributed, device
        self.fraction, self.started = 0.0, time.perf_counter()

    def start(self) -> None:
        self.started = time.perf_counter()

    def measure(self) -> None:
        if self.cfg.max_minutes:
            self.fraction = max_across(self.minutes_spent() / self.cfg.max_minutes, self.distributed, self.device)

    @property
    def spent(self) -> bool:
        return self.fraction >= 1.0

    def minutes_spent(self) -> float:
        return (time.perf_counter() - self.started) / 60.0

    def lr_factor(self, step: int) -> float:
        """The lr schedule: warm-up, then the step schedule's decay, or the budget's where it is further on."""
        cfg = self.cfg
        factor = lr_factor(step, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio, cfg.decay_fraction)
        if step >= cfg.warmup_steps and self.fraction > 0:
            factor = min(factor, decay_factor(self.fraction, cfg.min_lr_ratio, cfg.decay_fraction))
        return factor

    def progress(self, step: int) -> str:
        """``12/400``, or ``12 (1.5/10 min)`` when the time budget alone ends the run."""
        if self.cfg.steps >= TIME_BUDGET_STEPS:
            return f"{step} ({self.minutes_spent():.1f}/{self.cfg.max_minutes:g} min)"
        return f"{step}/{self.cfg.steps}"


def for_ranks(step_model, distributed: bool, device):
    """DistributedDataParallel around the model in a process group; the model itself alone."""
    if not distributed:
        return step_model
    # text-only sources leave the vision tower unused in some forwards
    return torch.nn.parallel.DistributedDataParallel(
        step_model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)


class RunLogs:
    """The main rank's records: train_log.jsonl and eval_log.jsonl (a resumed run rewrites the lines after its
    step) and the ``--report-to`` tracker."""

    def __init__(self, plan: TrainPlan, step: int):
        self.out = Path(plan.config.output)
        self.out.mkdir(parents=True, exist_ok=True)
        self.train_path, self.eval_path = self.out / "train_log.jsonl", self.out / "eval_log.jsonl"
        truncate_log(self.train_path, step)
        truncate_log(self.eval_path, step)
        self.reporter = Reporter(plan.config.report_to, self.out, plan.to_dict(), first_step=step + 1)

    def train(self, entry: dict) -> None:
        with open(self.train_path, "a") as handle:
            handle.write(json.dumps(entry) + "\n")
        self.reporter.log(entry)

    def eval(self, entry: dict) -> None:
        with open(self.eval_path, "a") as handle:
            handle.write(json.dumps(entry) + "\n")
        self.reporter.log(entry)

    def close(self) -> None:
        self.reporter.close()


class HeldOutEvaluation:
    """``--eval-every``: held-out REC on the main rank; the best model so far is kept in OUTPUT/best."""

    def __init__(self, cfg: TrainConfig, processor):
        from kosmos.train.heldout import RecEvaluator

        self.out, self.processor = Path(cfg.output), processor
        self.evaluator = RecEvaluator.from_files(cfg.eval_data, cfg.eval_images, processor, cfg.eval_limit)
        self.best = read_best(self.out)

    def evaluate(self, model, step: int, log=print) -> dict:
        """Evaluate (the model is left in eval mode), keep it if it is the best so far; the eval_log entry."""
        result = self.evaluator.evaluate(model)
        entry = {"step": step, "eval_rec": round(result["accuracy_pct"], 2), "eval_total": result["total"],
                 "eval_no_box": result["no_box"]}
        improved = self.best is None or entry["eval_rec"] > self.best["eval_rec"]
        if improved:
            self.best = entry
            save_best(self.out, model, self.processor, entry)
        log(f"step {step} held-out REC {entry['eval_rec']}% of {entry['eval_total']}"
            f"{' (best so far, saved to best/)' if improved else ''}")
        return entry


def save_checkpoint(cfg: TrainConfig, step: int, model, processor, optimizer, scheduler, mixture, distributed: bool,
                    log=print) -> None:
    """Every rank's source positions and RNG gathered; the main rank writes the checkpoint."""
    all_sources = gather(mixture.state(), distributed)
    all_rng = gather(ckpt.rng_state(), distributed)
    if not distributed or torch.distributed.get_rank() == 0:
        path = ckpt.save_checkpoint(Path(cfg.output) / "checkpoints", step, model, processor, {
            "step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "rng": all_rng, "sources": all_sources, "config": asdict(cfg),
        }, keep=cfg.keep_checkpoints)
        log(f"checkpoint {path}")
    if distributed:
        torch.distributed.barrier()


def log_line(entry: dict, progress: str) -> str:
    """The printed form of a log entry."""
    sources = entry["sources"]
    return (f"step {progress} loss {entry['loss']} text {entry['text_loss']} loc {entry['loc_loss']} "
            f"loc acc {entry['loc_acc']} lr {entry['lr']:.2e} {entry['tokens_per_s']:.0f} tok/s "
            f"{entry['samples_per_s']:.1f} samples/s"
            + ("".join(f" | {k} {v['loss']}" for k, v in sources.items()) if len(sources) > 1 else ""))


# --------------------------------------------------------------------------- log window, across ranks

def new_window(sources: list[str]) -> dict:
    window: dict[str, Any] = {label: dict.fromkeys(LOGGED, 0.0) for label in sources}
    window.update(steps=0, time=time.perf_counter())
    return window


def log_entry(step, window, sources, distributed, device, scheduler, grad_norm, skipped) -> dict:
    """One log line: totals over the sources, then each source's own loss, tokens and samples."""
    values = torch.tensor([window[label][k] for label in sources for k in LOGGED], dtype=torch.float64,
                          device=device)
    if distributed:
        torch.distributed.all_reduce(values)
    per = {label: dict(zip(LOGGED, values[i * len(LOGGED):(i + 1) * len(LOGGED)].tolist()))
           for i, label in enumerate(sources)}
    total = {k: sum(per[label][k] for label in sources) for k in LOGGED}
    elapsed = time.perf_counter() - window["time"]

    def losses(stats):
        text_n = stats["n"] - stats["loc_n"]
        return {
            "loss": round(stats["loss_sum"] / stats["n"], 6) if stats["n"] else None,
            "text_loss": round((stats["loss_sum"] - stats["loc_sum"]) / text_n, 6) if text_n else None,
            "loc_loss": round(stats["loc_sum"] / stats["loc_n"], 6) if stats["loc_n"] else None,
            "loc_acc": round(stats["loc_correct"] / stats["loc_n"], 4) if stats["loc_n"] else None,
        }

    return {
        "step": step, **losses(total),
        "lr": scheduler.get_last_lr()[0],
        "grad_norm": round(float(grad_norm), 4) if grad_norm is not None else None,
        "tokens_per_s": round(total["tokens"] / elapsed, 1),
        "samples_per_s": round(total["samples"] / elapsed, 2),
        "skipped": {reason: sum(c.get(reason, 0) for c in skipped.values())
                    for reason in sorted({r for c in skipped.values() for r in c})},
        "sources": {label: {**losses(per[label]), "tokens": int(per[label]["tokens"]),
                            "samples": int(per[label]["samples"]), "skipped": skipped.get(label, {})}
                    for label in sources},
    }


def max_across(value: float, distributed: bool, device) -> float:
    """The largest of the ranks' values (``value`` itself in one process)."""
    if not distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return float(tensor.item())


def gather(obj, distributed: bool) -> list:
    if not distributed:
        return [obj]
    out = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def sum_skipped(per_source: dict[str, dict[str, int]], distributed: bool) -> dict[str, dict[str, int]]:
    total: dict[str, dict[str, int]] = {}
    for rank_counts in gather(per_source, distributed):
        for label, counts in rank_counts.items():
            into = total.setdefault(label, {})
            for reason, n in counts.items():
                into[reason] = into.get(reason, 0) + n
    return total
