"""The metrics every task scores with, one module per family: ``grounding`` (REC accuracy, Flickr30k ANY-BOX recall,
IoU), ``captioning`` (pycocoevalcap METEOR / CIDEr), ``vqa`` (vqaEval.py accuracy), ``classification`` (harness
``acc`` / ``acc_norm``, ranked accuracy, ROC AUC), ``squad`` (exact match and F1).

Units (docs/evaluation.md): every rate or score is reported x 100, as the papers' tables print it, and its key ends in
``_pct`` (``accuracy_pct``, ``R@1_pct``, ``CIDEr_pct``); counts (``hits``, ``total``, ``missing``) are plain counts."""
