"""``kosmos train``: the Kosmos training mixture on one process or Ray Train workers.

``config`` (settings), ``setup`` (processor, model, optimiser), ``losses``, ``loop`` (the loop only),
``runfiles`` (logs, best model), ``heldout`` (evaluation during training), ``launch`` (driver checks, Ray).
"""
from kosmos.train.config import (DEFAULT_LOCATION_LOSS_WEIGHT, DEFAULT_LOCATION_SIGMA, FINETUNE_LR,
                                 FINETUNE_WARMUP_STEPS, TrainConfig)
from kosmos.train.launch import RunFolderError, train, train_with_ray
from kosmos.train.losses import (location_soft_targets, location_token_mask, lr_factor, resolve_device,
                                 sequence_losses)
from kosmos.train.runfiles import read_log

__all__ = ["DEFAULT_LOCATION_LOSS_WEIGHT", "DEFAULT_LOCATION_SIGMA", "FINETUNE_LR", "FINETUNE_WARMUP_STEPS",
           "RunFolderError", "TrainConfig", "location_soft_targets", "location_token_mask", "lr_factor",
           "read_log", "resolve_device", "sequence_losses", "train", "train_with_ray"]
