"""Shared test settings: offline, quiet, deterministic."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def nlp():
    """The default spaCy pipeline, loaded once for the whole test session."""
    from grit_pipeline.text import load_nlp

    return load_nlp()

from hypothesis import settings  # noqa: E402

# Deterministic property tests: the same examples on every run and machine.
settings.register_profile("grit", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("grit")
