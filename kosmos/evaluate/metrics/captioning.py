"""Caption metrics: pycocoevalcap METEOR and CIDEr(-D) after its PTB tokenizer, as the COCO caption evaluation (and
lichengunc/refer's ``refEvaluation.py`` for REG) computes them. METEOR and the tokenizer run Java: :func:`java_missing`
says so in one line before anything is loaded (``kosmos score`` / ``kosmos eval`` call it first)."""
from __future__ import annotations

import shutil
from typing import Any

INSTALL_JAVA = "apt-get install default-jre-headless"


class JavaMissingError(RuntimeError):
    pass


def java_missing() -> str | None:
    """One line saying that Java is missing (METEOR and the PTB tokenizer run it), or None when ``java`` is on PATH."""
    if shutil.which("java") is None:
        return (f"METEOR and CIDEr (pycocoevalcap's METEOR and PTB tokenizer) run Java, and no `java` is on PATH: "
                f"install a JRE (`{INSTALL_JAVA}`) and retry")
    return None


def require_java() -> None:
    problem = java_missing()
    if problem:
        raise JavaMissingError(problem)


def caption_metrics(candidates: dict[Any, str], references: dict[Any, list[str]],
                    metrics=("METEOR", "CIDEr")) -> dict[str, float]:
    """METEOR and CIDEr(-D) with pycocoevalcap (PTB-tokenized as the COCO caption evaluation does), x 100 as the
    papers print them: ``{"METEOR_pct", "CIDEr_pct"}``. Ids in ``candidates`` without references raise ValueError."""
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    require_java()
    missing = set(candidates) - set(references)
    if missing:
        raise ValueError(f"{len(missing)} predictions have no references, e.g. {sorted(missing, key=str)[:3]}")
    ids = sorted(candidates, key=str)
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": r} for r in references[i]] for i in ids})
    res = tokenizer.tokenize({i: [{"caption": candidates[i]}] for i in ids})
    out = {}
    if "METEOR" in metrics:
        from pycocoevalcap.meteor.meteor import Meteor

        scorer = Meteor()
        try:
            out["METEOR"], _ = scorer.compute_score(gts, res)
        finally:
            _close_meteor(scorer)
    if "CIDEr" in metrics:
        out["CIDEr"], _ = Cider().compute_score(gts, res)
    return {f"{k}_pct": round(100.0 * float(v), 2) for k, v in out.items()}


def _close_meteor(scorer) -> None:
    try:
        with scorer.lock:
            scorer.meteor_p.stdin.close()
            scorer.meteor_p.kill()
            scorer.meteor_p.wait()
    except Exception:
        pass
