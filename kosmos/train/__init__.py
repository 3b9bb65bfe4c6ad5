"""``kosmos train``: the Kosmos training mixture on one process or Ray Train workers.

``config`` (the settings and their flags), ``plan`` (flags + recipe + preset resolved once into the run's plan),
``recipes`` (the recipes' tables), ``setup`` (processor, model, optimiser), ``losses``, ``loop`` (the loop and its
helpers), ``runfiles`` (logs, best model), ``report`` (--report-to), ``heldout`` (evaluation during training),
``launch`` (the plan, driver checks, Ray).
"""
from kosmos.train.config import (DEFAULT_LOCATION_LOSS_WEIGHT, DEFAULT_LOCATION_SIGMA, FINETUNE_LR,
                                 FINETUNE_WARMUP_STEPS, TrainConfig)
from kosmos.train.launch import RunFolderError, train, train_with_ray
from kosmos.train.plan import PlanChangedError, TrainPlan, make_plan
from kosmos.train.losses import (location_soft_targets, location_token_mask, lr_factor, resolve_device,
                                 sequence_losses)
from kosmos.train.runfiles import read_log

__all__ = ["DEFAULT_LOCATION_LOSS_WEIGHT", "DEFAULT_LOCATION_SIGMA", "FINETUNE_LR", "FINETUNE_WARMUP_STEPS",
           "PlanChangedError", "RunFolderError", "TrainConfig", "TrainPlan", "location_soft_targets",
           "location_token_mask", "lr_factor", "make_plan", "read_log", "resolve_device", "sequence_losses", "train",
           "train_with_ray"]
