"""Held-out evaluation during training: REC on a RefCOCO-format file (the ``kosmos predict rec`` prompts and
decoding, scored in memory)."""
from __future__ import annotations

from pathlib import Path


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
    def from_files(cls, eval_data: str | None, eval_images: str | None, processor, limit: int) -> "RecEvaluator":
        """From an MDETR RefCOCO json (or a ``kosmos synth-refcoco`` folder); images beside it or ``eval_images``."""
        from kosmos.evalfiles import load_json

        if not eval_data:
            raise ValueError("--eval-every needs --eval-data (an MDETR RefCOCO json)")
        path = Path(eval_data)
        if path.is_dir():  # a `kosmos synth-refcoco` output folder
            found = sorted(path.glob("finetune_refcoco*.json"))
            if not found:
                raise ValueError(f"--eval-data {path}: no finetune_refcoco*.json there")
            path = found[0]
        images = eval_images or str(path.parent / "images")
        return cls(load_json(path, "--eval-data"), images, processor, limit=limit, path=str(path))

    def evaluate(self, model) -> dict:
        """REC accuracy (percent) of ``model`` on the held-out expressions (the whole image shown)."""
        from kosmos.metrics import rec_accuracy
        from kosmos.predict import generate

        model.eval()
        predictions = {row["id"]: row for row in generate(model, self.processor, self.queries, image_mode="square")}
        return rec_accuracy(predictions, self.images, self.truth)




def heldout_text_loss(model, processor, paths: list[str], sequence_length: int | None = None, max_rows: int = 200,
                      batch_size: int = 8, text_column: str = "text") -> dict:
    """Mean next-token loss (nats per target token) of ``model`` on a text corpus, packed as the ``text`` source
    packs it (file order, no shuffling): how well the model keeps language."""
    import torch
    import torch.nn.functional as F

    from kosmos.modeling import sequence_logits
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
            logits = sequence_logits(model, batch)[:, :-1].float()
            targets = batch["labels"][:, 1:]
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100,
                                   reduction="sum")
            total += float(loss)
            n += int((targets != -100).sum())
    return {"text_loss": round(total / max(n, 1), 4), "rows": len(rows), "tokens": n}
