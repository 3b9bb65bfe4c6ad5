"""Multiple-choice language tasks as lm-evaluation-harness runs them (Kosmos-1 section 4.8): a context, candidate
continuations scored by log-likelihood (target delimiter " "), demonstrations (the context and its right answer)
joined by a blank line before the query, ``acc`` and ``acc_norm``.

A task module gives a parser ``record -> Doc`` over the benchmark's own fields; partial scoring (Winogrande,
WSC273) is one context per option with one shared continuation (``Doc.contexts`` + ``Doc.target``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from kosmos.evaluate.rank import Option, RankItem
from kosmos.tasks.base import Inputs, Task, first_existing

TARGET_DELIMITER = " "
FEWSHOT_DELIMITER = "\n\n"


@dataclass(frozen=True)
class Doc:
    id: Any
    context: str | None          # the shared context (None with partial scoring)
    choices: list[str]           # the candidates (acc_norm divides by their lengths)
    gold: int
    contexts: list[str] | None = None   # partial scoring: one context per option ...
    target: str | None = None           # ... and the continuation they share

    def options(self) -> list[tuple[str, str]]:
        """(context, continuation) of every option."""
        if self.contexts is not None:
            return [(c, TARGET_DELIMITER + self.target) for c in self.contexts]
        return [(self.context, TARGET_DELIMITER + c) for c in self.choices]

    def answered(self) -> str:
        """The document with its right answer: a demonstration."""
        context, continuation = self.options()[self.gold]
        return context + continuation


def read_docs(path: str, parse: Callable[[dict, str], Doc], what: str = "data", read=None) -> list[Doc]:
    """Every record of a benchmark file (``read``: the task's reader, default ``formats.common.read_records``) through the
    task's parser; a bad record is one line naming file and line."""
    from kosmos.evaluate.formats.common import read_records

    docs = []
    for where, record in (read or read_records)(path, what):
        try:
            doc = parse(record, where)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
            message = str(error)
            raise ValueError(message if message.startswith(what) else f"{where}: {message}") from None
        if not 0 <= doc.gold < len(doc.options()):
            raise ValueError(f"{where}: the answer index {doc.gold} is not one of {len(doc.options())} options")
        docs.append(doc)
    return docs


def require(record: dict, name: str, where: str, kind=str):
    from kosmos.evaluate.formats.common import record_field

    return record_field(record, name, where, kind)


def items(docs: list[Doc], pool_docs: list[Doc], inputs: Inputs) -> list[RankItem]:
    """Rank items of ``docs`` (read from ``inputs.annotations``), each after ``inputs.shots`` demonstrations drawn from
    ``pool_docs`` (read from ``inputs.train``). A document is its file and its position there: only the query itself
    (the same file, the same record) is left out of its pool, never a training document that shares its id."""
    from kosmos.evaluate.fewshot import demonstrations, document_key

    pool = [(document_key(inputs.train, n), d) for n, d in enumerate(pool_docs)]
    out = []
    for n, doc in enumerate(docs):
        demos = demonstrations(pool, inputs.shots, inputs.seed, inputs.trial, doc.id,
                               document_key(inputs.annotations, n))
        prefix = "".join(d.answered() + FEWSHOT_DELIMITER for d in demos)
        options = [Option((("text", prefix + context),), continuation) for context, continuation in doc.options()]
        out.append(RankItem(doc.id, options))
    return out


def score_docs(predictions: str, docs: list[Doc]) -> dict:
    """``acc_pct`` and ``acc_norm_pct`` over every document; a document without a prediction counts as wrong."""
    from kosmos.evaluate.formats.common import read_records, record_field
    from kosmos.evaluate.metrics.classification import multiple_choice

    rows = {}
    for where, row in read_records(predictions, "predictions"):
        lls = record_field(row, "loglikelihoods", where, list)
        if "id" not in row:
            raise ValueError(f"{where}: missing field 'id'")
        rows[str(row["id"])] = (lls, where)
    partial = any(d.contexts is not None for d in docs)
    acc = acc_norm = 0.0
    missing = 0
    for doc in docs:
        found = rows.get(str(doc.id))
        if found is None:
            missing += 1
            continue
        lls, where = found
        if len(lls) != len(doc.options()) or not all(isinstance(v, (int, float)) for v in lls):
            raise ValueError(f"{where}: expected {len(doc.options())} log-likelihoods for {doc.id!r}")
        result = multiple_choice(lls, [len(c) for c in doc.choices], doc.gold)
        acc += result["acc"]
        acc_norm += result["acc_norm"]
    n = len(docs)
    out = {"acc_pct": round(100 * acc / n, 2) if n else 0.0, "total": n, "missing": missing}
    if not partial:  # with partial scoring every option continues with the same text: acc_norm = acc
        out["acc_norm_pct"] = round(100 * acc_norm / n, 2) if n else 0.0
    return out


def language_task(name: str, benchmark: str, prompt: str, parse: Callable[[dict, str], Doc] | dict,
                  eval_files: tuple[str, ...], train_files: tuple[str, ...] = ("train.jsonl",),
                  demonstrations: str = "train split (--train)", notes: str = "", read=None) -> Task:
    """A multiple-choice task over the benchmark's files. Suite layout: ``DIR/NAME/`` holding the first of
    ``eval_files`` and, for demonstrations, the first of ``train_files`` (else the evaluation file itself, the query
    excluded, as lm-evaluation-harness does for benchmarks without a training split). ``parse``: one parser, or
    ``{template name: parser}`` for a task written by several harness templates (the first is the default,
    ``--template`` picks another)."""
    parsers = parse if isinstance(parse, dict) else {}

    def parser(inputs: Inputs) -> Callable[[dict, str], Doc]:
        if not parsers:
            return parse
        template = inputs.template or next(iter(parsers))
        if template not in parsers:
            raise ValueError(f"{name} has no template {template!r}; choose one of {', '.join(parsers)}")
        return parsers[template]

    def queries(inputs: Inputs) -> list[RankItem]:
        if inputs.shots and not inputs.train:
            raise ValueError(f"{inputs.shots}-shot {name} needs --train (demonstrations)")
        docs = read_docs(inputs.annotations, parser(inputs), "annotations", read)
        pool = read_docs(inputs.train, parser(inputs), "train", read) if inputs.shots else []
        return items(docs, pool, inputs)

    def score(predictions: str, inputs: Inputs) -> dict:
        return score_docs(predictions, read_docs(inputs.annotations, parser(inputs), "annotations", read))

    def find(root: Path) -> Inputs | None:
        folder = root / name
        annotations = first_existing(folder, *eval_files)
        if annotations is None:
            return None
        train = first_existing(folder, *train_files) or annotations
        return Inputs(annotations=str(annotations), train=str(train))

    return Task(name=name, benchmark=benchmark, mode="rank", prompt=prompt, needs=("annotations",), metric="acc_pct",
                queries=queries, score=score, shots=(0, 1, 4), find=find, demonstrations=demonstrations,
                notes=notes, templates=tuple(parsers))
