"""Held-out evaluation during training: REC on a RefCOCO-format file (the ``kosmos predict rec`` prompts and
decoding, scored in memory)."""
from __future__ import annotations

# REC during training is the registry's rec task (kosmos.tasks.rec: its prompts, decoding and scoring).
from kosmos.tasks.rec import RecEvaluator  # noqa: F401


def heldout_text_loss(model, processor, paths: list[str], sequence_length: int | None = None, max_rows: int = 200,
                      batch_size: int = 8, text_column: str = "text") -> dict:
    """Mean next-token loss (nats per target token) of ``model`` on a text corpus, packed as the ``text`` source
    packs it (file order, no shuffling): how well the model keeps language."""
    import torch
    import torch.nn.functional as F

    from kosmos.modeling import next_token_targets, target_logits
    from kosmos.sequence import SequenceEncoder, collate
    from kosmos.sources import DataConfig, SourceSpec
    from kosmos.sources.text import TextSource

    config = model.config
    length = sequence_length or config.text_config.max_position_embeddings
    data = DataConfig(sequence_length=length, text_column=text_column)
    encoder = SequenceEncoder(processor, config.latent_query_num, config.vision_config.image_size)
    source = TextSource(SourceSpec("text", list(paths)), encoder, data)

    def units():
        for path in source.list_files():
            for raw in source.read(path, {}):
                try:
                    items = source.units(raw, 0, {})
                except Exception:  # noqa: BLE001 - an unusable document is left out, as in training
                    continue
                yield from ((unit, None) for unit in items)

    rows = []
    for row, _ in source.pack(units()):
        rows.append(row)
        if len(rows) >= max_rows:
            break
    model.eval()
    total, n = 0.0, 0
    device = next(model.parameters()).device
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            batch = collate(rows[start:start + batch_size], encoder.pad)
            batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
            _, targets = next_token_targets(batch["labels"])
            total += float(F.cross_entropy(target_logits(model, batch).float(), targets, reduction="sum"))
            n += targets.numel()
    return {"text_loss": round(total / max(n, 1), 4), "rows": len(rows), "tokens": n}
