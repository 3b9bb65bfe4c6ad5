"""Run set-up on the driver and on every worker: the processor, the model (new, --init or resumed), the optimiser."""
from __future__ import annotations

from pathlib import Path

import torch

from kosmos import checkpoint as ckpt
from kosmos.modeling import freeze_vision, init_location_embeddings, load_pretrained, load_vision_tower
from kosmos.presets import build_model, get_preset
from kosmos.train.config import TrainConfig
from kosmos.train.losses import location_token_ids


def prepare_processor(plan, log=print):
    """The processor to train with: a resumed run's, ``--init``'s, ``--tokenizer``'s, or a new one learnt from
    the text of every source of the plan's mixture (saved to OUTPUT/processor either way)."""
    from kosmos.sources import DataConfig, build_source
    from kosmos.tokenizer import build_processor, load_processor, train_tokenizer

    cfg = plan.config
    out = Path(cfg.output) / "processor"
    if cfg.resume and out.exists():
        return load_processor(out)
    if cfg.init:
        processor = load_processor(cfg.init)
    elif cfg.tokenizer:
        processor = load_processor(cfg.tokenizer)
        side = cfg.model_preset().image_size
        if processor.image_processor.crop_size.get("height") != side:  # preprocess for the model about to be built
            processor = build_processor(processor.tokenizer, side)
    else:
        preset = get_preset(cfg.preset)
        specs = plan.specs()
        config = DataConfig(**{k: v for k, v in cfg.data_options.items() if hasattr(DataConfig, k)})
        share = max(1, cfg.tokenizer_samples // len(specs))
        texts = [t for spec in specs for t in build_source(spec, None, config).sample_texts(share)]
        log(f"learning a {preset.tokenizer_vocab}-token BPE tokenizer on {len(texts)} texts of "
            f"{', '.join(s.label for s in specs)}")
        processor = build_processor(train_tokenizer(texts, preset.tokenizer_vocab), cfg.model_preset().image_size)
    processor.save_pretrained(out)
    return processor


def build_or_load_model(cfg: TrainConfig, processor, resume_dir: Path | None):
    """The model to train (resumed, --init or new; --vision-init's ViT), with --freeze-vision applied."""
    model = _build_or_load(cfg, processor, resume_dir)
    freeze_vision(model, cfg.freeze_vision)
    return model


def _build_or_load(cfg: TrainConfig, processor, resume_dir: Path | None):
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
    model = build_model(cfg.model_preset(), len(tok), seed=cfg.seed, connector=cfg.connector,
                        vision_position_init=cfg.vision_position_init,
                        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    if cfg.location_embedding_init not in (None, "random"):  # random: transformers' init, nothing to look up
        init_location_embeddings(model, location_token_ids(tok), how=cfg.location_embedding_init)
    if cfg.vision_init:
        load_vision_tower(model, cfg.vision_init)
    return model


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


