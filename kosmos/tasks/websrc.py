"""WebSRC (web-page question answering; Kosmos-1 section 4.4): the screenshot of the page, then the paper's prompt
with the text extracted from the page, the answer generated (greedy); SQuAD exact match and F1.

Files: the WebSRC v1.0 release as published, ``{domain}/{website}/dataset.csv`` (``question``, ``id``,
``element_id``, ``answer_start``, ``answer``) with ``processed_data/{page}.png`` (the screenshot) and
``processed_data/{page}.html`` beside it, the page being ``id[2:9]``. ``--annotations`` is the release's root
(every ``*/*/dataset.csv`` under it, sorted), one website folder, or one ``dataset.csv``.

The web text is the page's HTML with tags, scripts and styles removed, white space collapsed, cut to its first
``MAX_CONTEXT_WORDS`` words (the paper does not say how it extracted or cut it)."""
from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

from kosmos.evaluate.generate import Decoding, Query, clean_answer
from kosmos.tasks.base import Inputs, Task, first_existing

# The paper's prompt, "Qusestion" as it is written there.
DECODING = Decoding("Given the context below from web page, extract the answer from the given text like this: "
                    "Qusestion: Who is the publisher of this book? Answer: Penguin Books Ltd. Context: {web_text} "
                    "Q: {question} A:", max_new_tokens=20)
STOPS = ("Q:", "Qusestion:", "Question:")
MAX_CONTEXT_WORDS = 400


class _TextExtractor(HTMLParser):
    SKIP = {"script", "style", "noscript", "template", "head"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag, attrs):
        self.skipping += tag in self.SKIP

    def handle_endtag(self, tag):
        self.skipping -= tag in self.SKIP and self.skipping > 0

    def handle_data(self, data):
        if not self.skipping:
            self.parts.append(data)


def web_text(html: str, max_words: int = MAX_CONTEXT_WORDS) -> str:
    """The visible text of a page: tags, scripts and styles removed, white space collapsed, first ``max_words``."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    return " ".join(" ".join(parser.parts).split()[:max_words])


def dataset_files(path: str) -> list[Path]:
    root = Path(path)
    if root.is_file():
        return [root]
    files = sorted(root.glob("dataset.csv")) or sorted(root.glob("*/dataset.csv")) or sorted(root.glob("*/*/dataset.csv"))
    if not files:
        raise ValueError(f"annotations {root}: no WebSRC dataset.csv (expected {{domain}}/{{website}}/dataset.csv)")
    return files


def examples(inputs: Inputs) -> list[dict]:
    """``{"id", "question", "answers", "image", "html"}`` per question of the release's ``dataset.csv`` files."""
    from kosmos.evaluate.formats.common import read_records, record_field

    rows = []
    for path in dataset_files(inputs.annotations):
        pages = path.parent / "processed_data"
        for where, record in read_records(path, "annotations"):
            qid = record_field(record, "id", where)
            if len(qid) < 9:
                raise ValueError(f"{where}: 'id' {qid!r} is not a WebSRC id (the page is id[2:9])")
            question, answer = record_field(record, "question", where), record_field(record, "answer", where)
            rows.append({"id": qid, "question": question, "answers": [answer],
                         "image": str(pages / f"{qid[2:9]}.png"), "html": pages / f"{qid[2:9]}.html", "where": where})
    return rows


def queries(inputs: Inputs) -> list[Query]:
    max_words = int(inputs.option("max_context_words", MAX_CONTEXT_WORDS))
    texts: dict[Path, str] = {}
    out = []
    for row in examples(inputs):
        if row["html"] not in texts:
            try:
                texts[row["html"]] = web_text(row["html"].read_text(encoding="utf-8", errors="replace"), max_words)
            except OSError:
                raise ValueError(f"{row['where']}: no page {row['html']}") from None
        out.append(Query(row["id"], row["image"],
                         DECODING.prompt.format(web_text=texts[row["html"]], question=row["question"].strip()),
                         "websrc"))
    return out


def score(predictions: str, inputs: Inputs) -> dict:
    """Exact match and F1 (percent, SQuAD v1.1 normalisation), the answer cut at a following "Q:"; a missing
    prediction scores 0 (counted in ``missing``)."""
    from kosmos.evaluate.formats.common import read_records, record_field
    from kosmos.evaluate.metrics.squad import squad_em_f1

    found = {str(record_field(r, "id", w, (str, int))): r for w, r in read_records(predictions, "predictions")}
    rows = examples(inputs)
    em = f1 = 0.0
    for row in rows:
        if row["id"] in found:
            e, f = squad_em_f1(clean_answer(found[row["id"]].get("generated", ""), STOPS), row["answers"])
            em, f1 = em + e, f1 + f
    n = max(1, len(rows))
    return {"exact_match_pct": round(100 * em / n, 2), "f1_pct": round(100 * f1 / n, 2), "total": len(rows),
            "missing": sum(row["id"] not in found for row in rows)}


def find(root):
    """Suite layout: ``DIR/websrc/`` holding the release's ``{domain}/{website}/dataset.csv`` (the dev websites)."""
    folder = root / "websrc"
    if not folder.is_dir() or first_existing(folder, "dataset.csv", "*/dataset.csv", "*/*/dataset.csv") is None:
        return None
    return Inputs(annotations=str(folder))


TASK = Task(name="websrc", benchmark="WebSRC v1.0 ({domain}/{website}/dataset.csv + processed_data/)", mode="generate",
            prompt="[screenshot] " + DECODING.prompt, needs=("annotations",), metric="f1_pct", queries=queries,
            score=score, decoding=DECODING, find=find,
            notes=f"greedy, 20 tokens; web text: the page's HTML text, first {MAX_CONTEXT_WORDS} words")
