"""The learning-rate schedule and the next-token losses (location tokens weighted, optionally soft targets)."""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kosmos.evaluate.model import resolve_device  # noqa: F401 - the one device rule, re-exported
from kosmos.modeling import next_token_targets


def lr_factor(step: int, warmup: int, total: int, min_ratio: float = 0.0, decay_fraction: float = 1.0) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then 1 until the last ``decay_fraction`` of the steps after
    the warm-up, which decay linearly to ``min_ratio`` at ``total`` (1: decay from the warm-up on)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if total <= warmup:
        return 1.0
    return decay_factor((step - warmup) / (total - warmup), min_ratio, decay_fraction)


def decay_factor(progress: float, min_ratio: float = 0.0, decay_fraction: float = 1.0) -> float:
    """The lr factor at ``progress`` (0..1) of the run after the warm-up: 1, then a linear decay to ``min_ratio``
    over the last ``decay_fraction`` of it."""
    left = min(1.0, max(0.0, 1.0 - progress))
    return min_ratio + (1.0 - min_ratio) * min(1.0, left / decay_fraction)


def location_token_ids(tokenizer, grid: int = 32) -> torch.Tensor:
    """Ids of ``<patch_index_0000..>`` in cell order (row by row)."""
    vocab = tokenizer.get_vocab()
    return torch.tensor([vocab[f"<patch_index_{i:04d}>"] for i in range(grid * grid)])


def location_soft_targets(tokenizer, sigma: float, grid: int = 32):
    """(ids of ``<patch_index_0000..>`` in cell order, (cells x cells) target distributions): for a target
    cell, a 2D Gaussian of ``sigma`` cells around it over the location tokens, so neighbouring cells share
    the gradient (a box one cell off is nearly as good as the exact one)."""
    ids = location_token_ids(tokenizer, grid)
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
    weighted_sum: torch.Tensor  # sum(w_i * loss_i): the step's objective is its sum over sources / their weights
    loss_sum: torch.Tensor      # unweighted cross entropy over every target
    loc_sum: torch.Tensor       # over location-token targets
    loc_correct: torch.Tensor   # location targets whose argmax is right
    loc_n: torch.Tensor
    n: torch.Tensor


def sequence_losses(logits: torch.Tensor, labels: torch.Tensor, location_lookup: torch.Tensor,
                    location_weight: float = 1.0, soft_targets=None, size_pivot: float = 0.0,
                    size_max: float = 1.0) -> SequenceLosses:
    """``target_losses`` of a batch's logits at every position (batch, length, vocab) and its labels, the targets
    weighted by ``target_weights``."""
    where, targets = next_token_targets(labels)
    weights = target_weights(labels, location_lookup, location_weight, size_pivot, size_max)[where]
    return target_losses(logits[:, :-1][where], targets, location_lookup, location_weight, soft_targets, weights)


def target_losses(logits: torch.Tensor, targets: torch.Tensor, location_lookup: torch.Tensor,
                  location_weight: float = 1.0, soft_targets=None, weights: torch.Tensor | None = None
                  ) -> SequenceLosses:
    """Next-token cross entropy of the targets (``logits``: (targets, vocab), ``kosmos.modeling.target_logits``),
    location-token targets weighted ``location_weight`` (or each target by ``weights``, e.g. ``target_weights``
    at the targets): objective = sum(w_i * loss_i) / sum(w_i). With ``soft_targets`` (from
    ``location_soft_targets``) a location target's loss in the objective is the cross entropy against its
    Gaussian neighbourhood; the logged location loss stays the exact-cell cross entropy."""
    flat = logits.float()
    per_token = F.cross_entropy(flat, targets, reduction="none")
    loc = location_lookup.to(targets.device)[targets]
    if weights is None:
        weights = 1.0 + (location_weight - 1.0) * loc.float()
    else:
        weights = weights.to(flat)
    trained = per_token
    if soft_targets is not None and bool(loc.any()):
        ids, kernel = (t.to(flat.device) for t in soft_targets)
        cell_of_id = torch.full((flat.size(-1),), -1, dtype=torch.long, device=flat.device)
        cell_of_id[ids] = torch.arange(ids.numel(), device=flat.device)
        log_probs = F.log_softmax(flat[loc], dim=-1)[:, ids]
        soft = -(kernel[cell_of_id[targets[loc]]] * log_probs).sum(-1)
        trained = per_token.clone()
        trained[loc] = soft
    weighted_sum = (trained * weights).sum()
    objective = weighted_sum / weights.sum().clamp(min=1e-6)
    with torch.no_grad():
        loc_correct = (flat[loc].argmax(-1) == targets[loc]).sum()
    return SequenceLosses(objective, weighted_sum, per_token.detach().sum(), per_token[loc].detach().sum(), loc_correct,
                          loc.sum(), torch.tensor(targets.numel(), device=targets.device))


def target_weights(labels: torch.Tensor, location_lookup: torch.Tensor, location_weight: float,
                   size_pivot: float = 0.0, size_max: float = 1.0) -> torch.Tensor:
    """Per-target weights of a batch, (batch, length - 1) over ``labels[:, 1:]``: 1, location targets
    ``location_weight`` times ``box_size_factors``, 0 where no target. Known from the labels alone, so a step's
    total is known before any forward."""
    targets = labels[:, 1:]
    valid = targets != -100
    loc = valid & location_lookup.to(targets.device)[targets.clamp(min=0)]
    weights = valid.float() + (location_weight - 1.0) * loc.float()
    if size_pivot > 0 and size_max > 1 and bool(loc.any()):
        first_location_id = int(location_lookup.nonzero()[0])  # <patch_index_0000>; the 1,024 ids run in cell order
        weights[loc] = weights[loc] * box_size_factors(targets, loc, first_location_id, size_pivot, size_max)
    return weights


def box_size_factors(targets: torch.Tensor, loc: torch.Tensor, first_location_id: int, size_pivot: float,
                     size_max: float, grid: int = 32) -> torch.Tensor:
    """A factor for each location target (``targets[loc]``, row-major) from the size of its box: a box is a
    row's location targets taken two by two (upper-left, lower-right), ``s`` the geometric mean of its width and
    height in cells, its two targets weigh ``clamp(size_pivot / s, 1, size_max)``. A box one cell off is a
    miss for a small object and nearly right for a large one, so small boxes get more of the gradient. A row's
    unpaired last location target (a sequence cut between the corners) weighs 1."""
    rows = loc.nonzero()[:, 0]
    cells = targets[loc] - first_location_id
    first_of_row = torch.ones_like(rows, dtype=torch.bool)
    first_of_row[1:] = rows[1:] != rows[:-1]
    start = torch.zeros_like(rows)
    index = torch.arange(rows.numel(), device=rows.device)
    start[first_of_row] = index[first_of_row]
    start = torch.cummax(start, 0).values  # index of the row's first location target
    rank = index - start  # 0, 1, 2, ... within the row
    partner = torch.where(rank % 2 == 0, index + 1, index - 1).clamp(0, rows.numel() - 1)
    paired = rows[partner] == rows
    paired &= (rank % 2 == 1) | (partner != index)
    width = (cells % grid - cells[partner] % grid).abs() + 1
    height = (cells // grid - cells[partner] // grid).abs() + 1
    size = (width * height).float().sqrt()
    factors = (size_pivot / size).clamp(min=1.0, max=size_max)
    return torch.where(paired, factors, torch.ones_like(factors))


def autocast_for(device: torch.device, precision: str):
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if precision != "fp32":
        raise ValueError(f"precision must be auto, bf16 or fp32, got {precision!r}")
    return nullcontext()

