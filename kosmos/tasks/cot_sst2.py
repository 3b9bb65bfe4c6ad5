"""Multimodal chain of thought on Rendered SST-2 (Kosmos-1 section 4.6): the model first introduces the picture
("Introduce this picture in detail:", greedy), then answers with its own rationale before the question."""
from __future__ import annotations

from kosmos.evaluate.generate import Decoding, Query, clean_answer
from kosmos.tasks import sst2
from kosmos.tasks.base import Inputs, Task

RATIONALE = Decoding("Introduce this picture in detail:", max_new_tokens=40)


def queries(inputs: Inputs) -> list[Query]:
    return [Query(row["id"], row["image"], RATIONALE.prompt, "cot_sst2") for row in sst2.examples(inputs)]


def predict(model, processor, inputs: Inputs, batch_size: int = 16, image_mode: str = "square", limit=None,
            progress=None) -> list[dict]:
    """Stage 1 generates each image's rationale; stage 2 ranks the answers after image, rationale and question."""
    from kosmos.evaluate.generate import generate
    from kosmos.evaluate.rank import rank

    rows = sst2.examples(inputs)[:limit] if limit else sst2.examples(inputs)
    first = [Query(row["id"], row["image"], RATIONALE.prompt, "cot_sst2") for row in rows]
    rationales = {r["id"]: clean_answer(r["generated"]) for r in generate(model, processor, first, {"cot_sst2": RATIONALE},
                                                                          batch_size, image_mode)}
    # the image, then "{rationale} Question: what is the sentiment of the opinion? Answer:"
    items = sst2.items_for(rows, context=lambda row: (("text", rationales[row["id"]]),))
    return [{**result, "rationale": rationales[result["id"]]}
            for result in rank(model, processor, items, image_mode=image_mode, progress=progress)]


TASK = Task(name="cot_sst2", benchmark="Rendered SST-2 (image folder), chain of thought", mode="rank",
            prompt="[image] Introduce this picture in detail: -> [image] {rationale} " + sst2.PROMPT + " {answer}",
            needs=("annotations",), metric="accuracy_pct", queries=queries, score=sst2.score, decoding=RATIONALE,
            find=sst2.find, predict=predict, notes="rationale: greedy, 40 tokens, first line")
