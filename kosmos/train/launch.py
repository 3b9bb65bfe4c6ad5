"""``kosmos train``'s entry: the plan (made once, printed, written to OUTPUT/plan.json, checked on --resume), checks
on the driver (settings, run folder, every source), the processor, then the loop here or on Ray Train workers
(``TorchTrainer``, DistributedDataParallel); every one of them reads the plan."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from kosmos import checkpoint as ckpt
from kosmos.modeling import check_vision_tower
from kosmos.train.config import TrainConfig
from kosmos.train.loop import run_training
from kosmos.train.plan import (PLAN_FILE, TrainPlan, check_resume, check_resume_before_plans, make_plan, plan_lines,
                               read_plan, write_plan)
from kosmos.train.report import check_reporter
from kosmos.train.runfiles import read_log
from kosmos.train.setup import find_resume_dir, prepare_processor

# What a run writes into OUTPUT (what --overwrite removes; nothing else there is touched).
RUN_FILES = ("processor", "checkpoints", "best", "ray", "train_log.jsonl", "eval_log.jsonl", "done", PLAN_FILE,
             "tensorboard", "wandb")


class RunFolderError(ValueError):
    """OUTPUT already holds a run and neither --resume nor --overwrite was given."""


def check_run_folder(cfg: TrainConfig) -> None:
    """Refuse to start over silently in a folder that holds a run; ``--overwrite`` removes its run files."""
    out = Path(cfg.output)
    present = [name for name in RUN_FILES if (out / name).exists()]
    if not present or cfg.resume:
        return
    if not cfg.overwrite:
        raise RunFolderError(f"{out} already holds a run ({', '.join(present)}): --resume continues it, "
                             "--overwrite starts over (its run files are removed)")
    for name in present:
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def train(cfg: TrainConfig, log=print) -> dict[str, Any]:
    """Make the plan, check everything that can be checked here, prepare the processor, then train here or on
    Ray workers."""
    from kosmos.mix import check_sources
    from kosmos.sources import DataConfig

    data = DataConfig(**{k: v for k, v in cfg.data_options.items() if hasattr(DataConfig, k)})
    problems = cfg.number_problems() + data.number_problems()
    if problems:
        raise ValueError("; ".join(problems))
    from kosmos.evaluate.model import check_model_path

    for flag, path in (("--init", cfg.init), ("--tokenizer", cfg.tokenizer),
                       ("--vision-init", cfg.vision_init)):
        if path:
            check_model_path(path, flag)   # a missing local folder in one line, never a Hub lookup
    check_reporter(cfg.report_to)
    plan = make_plan(cfg)
    cfg = plan.config  # from here on everything reads the plan
    if cfg.vision_init:
        check_vision_tower(cfg.vision_init, cfg.model_preset().vision_sizes())
    check_run_folder(cfg)
    resume_dir = find_resume_dir(cfg)
    if resume_dir is not None:  # a crafted state.pt is refused here in one line, before any worker starts
        ckpt.check_state(resume_dir)
        check_resumed_plan(plan, resume_dir)
    check_sources(plan.specs(), data)
    for line in plan_lines(plan):
        log(line)
    on_ray = cfg.num_workers > 1 or bool(cfg.ray_address)
    threads = cfg.threads if on_ray else cpu_threads(cfg)  # (a Ray Train worker gets its threads from Ray)
    if threads:
        torch.set_num_threads(threads)
        if not cfg.threads:
            log(f"torch threads: {threads} ({usable_cpus()} CPUs less {cfg.loader_workers} loader process(es); "
                "--threads sets it)")
    processor = prepare_processor(plan, log)
    write_plan(plan)
    if on_ray:
        return train_with_ray(plan, log)
    return run_training(plan, processor, log=log)


def check_resumed_plan(plan: TrainPlan, resume_dir: Path) -> None:
    """``--resume`` continues the same run: its settings against OUTPUT/plan.json, or for a run folder written
    before plans, against what its checkpoint recorded (``PlanChangedError``, one line naming the setting)."""
    saved = read_plan(plan.config.output)
    if saved is not None:
        check_resume(plan, saved)
        return
    state = ckpt.load_state(resume_dir)
    check_resume_before_plans(plan, state.get("config", {}) if isinstance(state, dict) else {}, resume_dir)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # (no affinity masks: macOS, Windows)
        return os.cpu_count() or 1


def cpu_threads(cfg: TrainConfig, cpus: int | None = None) -> int | None:
    """torch threads of a single-process run: ``--threads``, else on CPU one per CPU left over by the loader
    processes (at least one), else (GPU) torch's choice (None).

    torch's own default, a thread per CPU, shares the CPUs with the loader processes: on 2 CPUs with one loader
    process the tiny preset then trains at 0.74-0.78x the speed of one thread, because torch's threads wait for
    each other on every small matmul while the loader holds a CPU (docs/companion.md)."""
    if cfg.threads:
        return cfg.threads
    from kosmos.train.losses import resolve_device

    if resolve_device(cfg.device).type != "cpu":
        return None
    return max(1, (cpus or usable_cpus()) - cfg.loader_workers)


def _ray_worker(loop_config: dict) -> None:
    import ray.train
    import ray.train.torch
    from kosmos.tokenizer import load_processor

    plan = TrainPlan.from_dict(loop_config["plan"])
    if plan.config.threads:
        torch.set_num_threads(plan.config.threads)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    processor = load_processor(Path(plan.config.output) / "processor")
    log = (lambda message: print(message, flush=True)) if rank == 0 else (lambda message: None)
    summary = run_training(plan, processor, rank=rank, world_size=world, device=device, log=log)
    ray.train.report({"step": summary["step"]})


def train_with_ray(plan: TrainPlan, log=print) -> dict[str, Any]:
    """Run ``run_training`` on ``num_workers`` Ray Train workers (DDP; gloo on CPU, nccl on GPU), each sent the
    plan (its paths absolute).

    ``OUTPUT`` must be on storage every worker can reach (the checkpoints are written by rank 0).
    """
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cfg = plan.config
    if not ray.is_initialized():
        ray.init(address=cfg.ray_address or "local", include_dashboard=False, log_to_driver=True,
                 runtime_env={"env_vars": {"NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1"}})
    trainer = TorchTrainer(
        _ray_worker,
        train_loop_config={"plan": plan.to_dict()},
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu),
        run_config=RunConfig(name="kosmos-train", storage_path=str(Path(cfg.output) / "ray")),
    )
    result = trainer.fit()
    log(f"ray training finished: {result.metrics}")
    last = read_log(cfg.output)
    return {"step": last[-1]["step"] if last else 0, "ray_metrics": result.metrics}
