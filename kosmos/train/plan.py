"""The plan of a run: flags, recipe and preset turned once into every setting ``kosmos train`` trains with.

``make_plan(cfg)`` resolves each setting in one order of precedence, and records where its value came from:

    flag > recipe > preset > paper > default

- ``flag``: given on the command line (a ``TrainConfig`` field other than its default; ``--mix KIND=PATHS:BATCH``);
- ``recipe``: ``--recipe instruct`` (Table 8 and its schedule) or fine-tuning an ``--init`` model
  (``kosmos.train.recipes``);
- ``preset``: the ``--preset`` (its schedule, batch size, model, mixture shares and loss weights, data defaults);
- ``paper``: Kosmos-2's own numbers where nothing above sets them (Table 7's rows per step, loss weight 1);
- ``default``: ``kosmos train``'s own default (the flag's help says it).

The plan is printed at the start, written to ``OUTPUT/plan.json`` and, on ``--resume``, compared with the one
written there: a changed setting that would make the resumed run another run is refused in one line naming it
(:func:`check_resume`). The driver, the loop, the mixture and Ray workers read only the plan.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from kosmos.presets import get_preset
from kosmos.sources import SourceError, SourceSpec
from kosmos.train import recipes

PLAN_FILE = "plan.json"
ORIGINS = ("flag", "recipe", "preset", "paper", "default")
# Settings a resumed run must keep: they decide what the next step reads and how it learns (the model's own
# settings come from the checkpoint; the budget, the step limits, logging, evaluation and devices may change).
KEPT_ON_RESUME = ("preset", "recipe", "init", "seed", "num_workers", "loader_workers", "batch_size", "grad_accum",
                  "lr", "warmup_steps", "min_lr_ratio", "decay_fraction", "weight_decay", "betas", "grad_clip",
                  "location_loss_weight", "location_sigma", "small_box_weight", "small_box_cells")
# What a checkpoint written before plans recorded of these (its state.pt "config"): checked as it was then.
KEPT_ON_RESUME_BEFORE_PLANS = ("num_workers", "loader_workers", "batch_size", "grad_accum", "seed", "mix")


class PlanChangedError(ValueError):
    """``--resume`` with a setting other than the run's (one line naming it)."""


@dataclass(frozen=True)
class PlannedSource:
    """One source of the mixture: its paths (absolute, URLs as given), rows per step and loss weight."""

    kind: str
    paths: tuple[str, ...]
    batch_size: int
    loss_weight: float
    origin: Mapping[str, str] = field(default_factory=dict)  # batch_size / loss_weight -> where from

    @property
    def label(self) -> str:
        return self.kind

    def spec(self) -> SourceSpec:
        """The ``SourceSpec`` a source reader is built from."""
        return SourceSpec(kind=self.kind, paths=list(self.paths), batch_size=self.batch_size)


@dataclass(frozen=True)
class TrainPlan:
    """Every setting of a run, resolved. ``config``: the settings (``TrainConfig``, every default filled);
    ``sources``: the mixture; ``origin``: setting name -> flag | recipe | preset | paper | default (data options
    as ``data.NAME``, the model's as ``model.NAME``); ``model``: the model's settings."""

    config: Any  # TrainConfig (kept unmodified: the plan is never changed after make_plan)
    sources: tuple[PlannedSource, ...]
    model: Mapping[str, Any]
    origin: Mapping[str, str]

    def specs(self) -> list[SourceSpec]:
        return [source.spec() for source in self.sources]

    def to_dict(self) -> dict:
        """The plan as JSON-ready values (``plan.json``; what Ray workers are sent)."""
        return {"settings": asdict(self.config), "model": dict(self.model),
                "sources": [{"kind": s.kind, "paths": list(s.paths), "batch_size": s.batch_size,
                             "loss_weight": s.loss_weight, "from": dict(s.origin)} for s in self.sources],
                "from": dict(self.origin)}

    @classmethod
    def from_dict(cls, values: dict) -> "TrainPlan":
        from kosmos.train.config import TrainConfig

        settings = dict(values["settings"])
        settings["betas"] = tuple(settings["betas"])
        sources = tuple(PlannedSource(kind=s["kind"], paths=tuple(s["paths"]), batch_size=s["batch_size"],
                                      loss_weight=s["loss_weight"], origin=MappingProxyType(dict(s["from"])))
                        for s in values["sources"])
        return cls(config=TrainConfig(**settings), sources=sources, model=MappingProxyType(dict(values["model"])),
                   origin=MappingProxyType(dict(values["from"])))


def absolute_path(path: str) -> str:
    """A local path made absolute (Ray workers run elsewhere); URLs and ``pipe:`` commands as given."""
    if "://" in path or path.startswith("pipe:"):
        return path
    return os.path.abspath(path)


def given(cfg, name: str) -> bool:
    """Whether setting ``name`` was given (differs from its ``TrainConfig`` default)."""
    spec = next(f for f in fields(cfg) if f.name == name)
    default = spec.default_factory() if callable(spec.default_factory) else spec.default
    return getattr(cfg, name) != default


def make_plan(cfg) -> TrainPlan:
    """The plan of ``cfg`` (a ``TrainConfig``), in one pass (``SourceError``/``ValueError`` in one line)."""
    config, model, origin = resolve_settings(cfg)
    return TrainPlan(config=config, sources=plan_sources(cfg, config, origin), model=MappingProxyType(model),
                     origin=MappingProxyType(origin))


def resolve_settings(cfg) -> tuple[Any, dict, dict]:
    """Every setting but the sources: (the resolved ``TrainConfig``, the model's settings, where each came from)."""
    from dataclasses import replace

    from kosmos.train.config import DEFAULT_LOCATION_LOSS_WEIGHT, DEFAULT_LOCATION_SIGMA, TIME_BUDGET_STEPS

    preset = get_preset(cfg.preset)
    origin: dict[str, str] = {}
    values: dict[str, Any] = {}

    # ---- the schedule and the loss: each setting from the first level that sets it
    levels = {  # name -> [(origin, value)], highest precedence first (below the flag)
        "steps": [("preset", preset.max_steps)],
        "batch_size": [("preset", preset.batch_size)],
        "lr": [("preset", preset.lr)],
        "warmup_steps": [("preset", preset.warmup_steps)],
        "decay_fraction": [("preset", preset.decay_fraction)],
        "location_loss_weight": [("default", DEFAULT_LOCATION_LOSS_WEIGHT)],
        "location_sigma": [("default", DEFAULT_LOCATION_SIGMA)],
        "location_embedding_init": [("preset", preset.location_embedding_init)],
    }
    if cfg.init:  # fine-tuning an --init model
        for name, value in recipes.finetune_schedule().items():
            levels[name].insert(0, ("recipe", value))
    if cfg.recipe == "instruct":
        for name, value in recipes.instruct_schedule(preset).items():
            levels[name].insert(0, ("recipe", value))
    if cfg.steps is None and cfg.max_minutes:  # the time budget alone ends the run
        levels["steps"].insert(0, ("flag", TIME_BUDGET_STEPS))
    for f in fields(cfg):
        name = f.name
        if given(cfg, name):
            values[name], origin[name] = getattr(cfg, name), "flag"
        elif name in levels:
            origin[name], values[name] = levels[name][0]
        else:
            values[name], origin[name] = getattr(cfg, name), "default"
    values["warmup_steps"] = min(values["warmup_steps"], values["steps"])
    values["output"] = absolute_path(cfg.output)

    # ---- data options: flag > the preset's from-scratch defaults > DataConfig's (max_length: the preset's)
    scratch_pretraining = not cfg.init and cfg.recipe == "pretrain"
    data_defaults = (preset.data_defaults or {}) if scratch_pretraining else {}
    values["data_options"] = {**data_defaults, **cfg.data_options}
    for name in values["data_options"]:
        origin[f"data.{name}"] = "flag" if name in cfg.data_options else "preset"
    origin["data.max_length"] = "flag" if "max_length" in cfg.data_options else "preset"
    for name in ("images_from", "llava_images", "exclude_images"):  # local folders and files of the sources
        if values["data_options"].get(name):
            values["data_options"][name] = absolute_path(values["data_options"][name])

    # ---- the model: flag > preset (an --init or resumed model keeps its own)
    model = {"preset": cfg.preset, "init": cfg.init, "vision_init": cfg.vision_init,
             "freeze_vision": cfg.freeze_vision, "vision_position_init": cfg.vision_position_init,
             "location_embedding_init": values["location_embedding_init"]}
    if not cfg.init:
        shaped = cfg.model_preset()
        model.update(image_size=shaped.image_size, patch_size=shaped.patch_size, connector=shaped.connector)
        for name in ("image_size", "patch_size", "connector"):
            origin[f"model.{name}"] = "flag" if getattr(cfg, name) else "preset"
    return replace(cfg, **values), model, origin


def plan_sources(cfg, config, origin: dict) -> tuple[PlannedSource, ...]:
    """The mixture: ``--data`` is the grounded source (``--batch-size`` rows), ``--mix`` adds sources (or holds
    them all); a source's rows per step: its ``:BATCH`` > the recipe's share > the preset's > the paper's."""
    from kosmos.mix import parse_mix

    preset = get_preset(cfg.preset)
    specs = parse_mix(cfg.mix) if cfg.mix else []
    if cfg.data:
        if any(spec.kind == "grounded" for spec in specs):
            raise SourceError("grounded data is given twice (--data and --mix grounded=...): give it once")
        specs.insert(0, SourceSpec(kind="grounded", paths=list(cfg.data)))
    if not specs:
        raise SourceError("no training data: give --data GRIT_SHARDS and/or --mix KIND=PATHS[:BATCH] ...")
    weights = source_weight_origins(config, preset, not cfg.init and cfg.recipe == "pretrain")
    kinds = [spec.kind for spec in specs]
    for kind in sorted(set(config.source_weight_map()) - set(kinds)):
        raise SourceError(f"--source-weights {kind}=...: the mixture has no {kind} source")
    sources = []
    for spec in specs:
        if spec.batch_size is not None:  # --mix KIND=PATHS:BATCH
            batch, batch_origin = spec.batch_size, "flag"
        elif spec.kind == "grounded" and cfg.data:  # --data: --batch-size rows
            batch, batch_origin = config.batch_size, origin["batch_size"]
        else:
            batch, batch_origin = recipes.batch_size_of(spec.kind, kinds, config.batch_size, cfg.recipe,
                                                        preset.mixture_shares)
        weight, weight_origin = weights.get(spec.kind, (1.0, "paper"))
        sources.append(PlannedSource(
            kind=spec.kind, paths=tuple(absolute_path(p) for p in spec.paths), batch_size=batch, loss_weight=weight,
            origin=MappingProxyType({"batch_size": batch_origin, "loss_weight": weight_origin})))
    return tuple(sources)


def source_weight_origins(cfg, preset, scratch_pretraining: bool) -> dict[str, tuple[float, str]]:
    """Loss weight of each source kind named by ``--source-weights`` (flag) or the preset's from-scratch
    defaults (``Preset.mixture_loss_weights``); a kind named by neither weighs 1 (the paper's)."""
    defaults = (preset.mixture_loss_weights or {}) if scratch_pretraining else {}
    return {**{kind: (w, "preset") for kind, w in defaults.items()},
            **{kind: (w, "flag") for kind, w in cfg.source_weight_map().items()}}


# --------------------------------------------------------------------------- printing, plan.json, resume

def _shown(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return " ".join(_shown(v) for v in value)
    return str(value)


PLAN_GROUPS = (
    ("schedule", ("steps", "batch_size", "grad_accum", "lr", "warmup_steps", "decay_fraction", "min_lr_ratio",
                  "max_minutes", "stop_at_step", "weight_decay", "betas", "grad_clip", "seed")),
    ("loss", ("location_loss_weight", "location_sigma", "small_box_weight", "small_box_cells")),
    ("run", ("precision", "device", "num_workers", "loader_workers", "threads", "report_to", "eval_every")),
)


def plan_lines(plan: TrainPlan) -> list[str]:
    """The plan as the run prints it: each setting with where it came from."""
    cfg, origin = plan.config, plan.origin
    lines = [f"plan ({' > '.join(ORIGINS)}; written to {Path(cfg.output) / PLAN_FILE}):"]
    for source in plan.sources:
        lines.append(f"  source {source.label}: {source.batch_size} rows/step ({source.origin['batch_size']}), "
                     f"loss weight {source.loss_weight:g} ({source.origin['loss_weight']}), "
                     f"{', '.join(source.paths)}")
    for group, names in PLAN_GROUPS:
        shown = [f"{name} {_shown(getattr(cfg, name))} ({origin[name]})" for name in names
                 if getattr(cfg, name, None) is not None]
        lines.append(f"  {group}: " + ", ".join(shown))
    model = [f"{name} {_shown(value)} ({origin.get(f'model.{name}', origin.get(name, 'flag'))})"
             for name, value in plan.model.items() if value is not None]
    lines.append("  model: " + ", ".join(model))
    data = [f"{name} {_shown(value)} ({origin[f'data.{name}']})" for name, value in cfg.data_options.items()]
    lines.append("  data: " + (", ".join(data) if data else "the defaults (kosmos train --help)"))
    return lines


def write_plan(plan: TrainPlan) -> Path:
    """``OUTPUT/plan.json``, written atomically."""
    out = Path(plan.config.output)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"{PLAN_FILE}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(plan.to_dict(), indent=1, default=str) + "\n")
    os.replace(tmp, out / PLAN_FILE)
    return out / PLAN_FILE


def read_plan(output: str | Path) -> dict | None:
    """The plan a run folder holds (None when it has none: a run from before plans, or a new folder)."""
    path = Path(output) / PLAN_FILE
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise PlanChangedError(f"{path} cannot be read ({error}): resume needs the run's plan") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("settings"), dict):
        raise PlanChangedError(f"{path} is not a plan written by kosmos train: resume needs the run's plan")
    return saved


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-12)
    return a == b


def check_resume(plan: TrainPlan, saved: dict) -> None:
    """Refuse (one line naming it) a setting, a source or a data option other than in the resumed run's plan."""
    where = Path(plan.config.output) / PLAN_FILE
    before = saved["settings"]
    for name in KEPT_ON_RESUME:
        now = getattr(plan.config, name)
        if name in before and not _same(before[name], now):
            raise PlanChangedError(f"cannot resume with --{name.replace('_', '-')} {_shown(now)}: the run was "
                                   f"planned with {_shown(before[name])} ({where}); give the same, or start a new run")
    old_sources = {s["kind"]: s for s in saved.get("sources", [])}
    new_sources = {s.kind: s for s in plan.sources}
    if sorted(old_sources) != sorted(new_sources):
        raise PlanChangedError(f"cannot resume with the sources {', '.join(sorted(new_sources))}: the run was "
                               f"planned with {', '.join(sorted(old_sources))} ({where})")
    for kind, source in new_sources.items():
        for name in ("paths", "batch_size", "loss_weight"):
            if not _same(old_sources[kind].get(name), getattr(source, name)):
                raise PlanChangedError(
                    f"cannot resume with the {kind} source's {name.replace('_', ' ')} {_shown(getattr(source, name))}:"
                    f" the run was planned with {_shown(old_sources[kind].get(name))} ({where})")
    old_data, new_data = before.get("data_options", {}), plan.config.data_options
    for name in sorted(set(old_data) | set(new_data)):
        if not _same(old_data.get(name), new_data.get(name)):
            raise PlanChangedError(f"cannot resume with --{name.replace('_', '-')} {_shown(new_data.get(name))}: "
                                   f"the run was planned with {_shown(old_data.get(name))} ({where})")


def check_resume_before_plans(plan: TrainPlan, saved_config: dict, checkpoint: Path) -> None:
    """A checkpoint written before plans (no plan.json; state.pt's "config"): its recorded settings compared."""
    for name in KEPT_ON_RESUME_BEFORE_PLANS:
        now = getattr(plan.config, name)
        if name in saved_config and saved_config[name] != now:
            raise PlanChangedError(f"cannot resume exactly with --{name.replace('_', '-')} {now}: the checkpoint "
                                   f"{checkpoint} was written with {saved_config[name]}")
