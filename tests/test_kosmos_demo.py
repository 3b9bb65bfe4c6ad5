"""`kosmos demo` (the Gradio page) driven in headless Chromium with a tiny model, its answer parsing, and the one-line
refusal of a missing local --model folder (chat, predict, eval, text-loss, demo) that never reaches the Hub."""
from __future__ import annotations

import pytest

from kosmos.cli import main as kosmos_main


@pytest.fixture()
def no_hub(monkeypatch):
    """Fail the test if a model load gets as far as transformers (where a missing folder becomes a Hub id)."""
    import kosmos.modeling

    def refuse(path, **kwargs):
        raise AssertionError(f"load_pretrained({path!r}) was called")

    monkeypatch.setattr(kosmos.modeling, "load_pretrained", refuse)


@pytest.mark.parametrize("argv", [
    ["chat", "--question", "hi"],
    ["predict", "rec", "--annotations", "a.json", "--images", "img", "--output", "out.jsonl"],
    ["eval", "rec", "--annotations", "a.json", "--images", "img", "--output", "out"],
    ["text-loss", "--data", "corpus.jsonl"],
    ["demo"],
])
@pytest.mark.parametrize("model", ["kosmos_out/nope", "./run", "{tmp}/gone/model"])
def test_missing_local_model_folder_is_one_line_never_a_hub_id(argv, model, tmp_path, monkeypatch, capsys, no_hub):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "kosmos_out").mkdir()
    model = model.format(tmp=tmp_path)
    code = kosmos_main([*argv, "--model", model])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1, err
    assert f"--model {model}: the local folder does not exist" in err and "Traceback" not in err
    if model == "kosmos_out/nope":
        assert "nearest existing folder: kosmos_out" in err


def test_hub_like_names_are_left_to_transformers():
    from kosmos.evaluate.model import check_model_path, looks_local

    assert not looks_local("gpt2")  # a bare name may be a Hub id: not refused here
    check_model_path("gpt2")
    assert looks_local("kosmos_out/nope") and looks_local("./x") and looks_local("/abs/x") and looks_local("~/x")
