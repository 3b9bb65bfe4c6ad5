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


def test_hub_like_names_are_left_to_transformers(tmp_path, monkeypatch):
    from kosmos.evaluate.model import check_model_path, looks_local

    monkeypatch.chdir(tmp_path)
    (tmp_path / "kosmos_out").mkdir()
    assert not looks_local("gpt2")  # a bare name may be a Hub id: not refused here
    check_model_path("gpt2")
    assert not looks_local("microsoft/kosmos-2-patch14-224")   # owner/name, no local folder "microsoft"
    check_model_path("microsoft/kosmos-2-patch14-224")
    assert looks_local("kosmos_out/nope") and looks_local("./x") and looks_local("/abs/x") and looks_local("~/x")
    assert looks_local("runs/a/b")


def test_shown_answer_colours_phrases_and_places_boxes_in_pixels():
    from grit_pipeline.views.html import PALETTE
    from kosmos.demo import shown_answer

    raw = ("<phrase>a dog</phrase><object><patch_index_0000><patch_index_0527></object> next to"
           "<phrase> a dog</phrase><object><patch_index_0528><patch_index_1023></object> and"
           "<object><patch_index_0032><patch_index_0100></object>")
    shown = shown_answer(raw, (320, 240))
    assert [label for _, label in shown.segments] == ["a dog", None, "a dog (2)", None]
    assert "".join(text for text, _ in shown.segments).split() == ["a", "dog", "next", "to", "a", "dog", "and"]
    assert shown.colours == {"a dog": PALETTE[0], "a dog (2)": PALETTE[1], "(box)": PALETTE[2]}
    # cell (0, 0) .. (15, 16) of the 32 x 32 grid: the cells' centres, in pixels of the 320 x 240 image
    assert shown.annotations[0] == ((5, 4, 155, 124), "a dog")
    assert [label for _, label in shown.annotations] == ["a dog", "a dog (2)", "(box)"]
    assert shown_answer("no markup at all", (10, 10)).segments == [("no markup at all", None)]


def test_demo_without_gradio_says_how_to_install(monkeypatch, capsys, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` raises ImportError
    code = kosmos_main(["demo", "--model", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "kosmos demo needs gradio: pip install 'grit[demo]'"


@pytest.mark.parametrize("flags, message", [(["--port", "0"], "--port 0"),
                                             (["--max-new-tokens", "0"], "--max-new-tokens 0")])
def test_demo_settings_out_of_range_are_one_line(flags, message, tmp_path, capsys, no_hub):
    code = kosmos_main(["demo", "--model", str(tmp_path), *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err


# ---- the page in headless Chromium ----------------------------------------------------------------------------

QUESTION = "what is in the picture"
TAUGHT = "<phrase> a red square</phrase><object><patch_index_0000><patch_index_0527></object>"


def taught_model(folder, steps: int = 40):
    """A tiny random-initialised model taught one grounded answer to QUESTION (a few dozen steps on one row), so
    the page's answer has a phrase and a box whatever the weights' seed; saved with its processor to ``folder``."""
    import torch

    from kosmos.conversation import conversation_segments
    from kosmos.presets import build_model, get_preset
    from kosmos.sequence import IGNORE, SequenceEncoder
    from kosmos.tokenizer import build_processor
    from kosmos_sources_helpers import word_processor
    from PIL import Image

    torch.manual_seed(0)
    words = "Question: Answer: what is in the picture a red square".split()
    processor = build_processor(word_processor(words, 160).tokenizer, image_size=get_preset("tiny").image_size)
    model = build_model(get_preset("tiny"), vocab_size=len(processor.tokenizer), seed=0)
    encoder = SequenceEncoder(processor, model.config.latent_query_num, model.config.vision_config.image_size,
                              "square")
    pixels = encoder.pixels(Image.new("RGB", (80, 60), (220, 30, 30)))[0]
    row = encoder.encode(conversation_segments([(QUESTION, TAUGHT)], "qa", pixels, grounding=True))
    inputs = {name: row[name].unsqueeze(0) for name in ("input_ids", "attention_mask", "image_embeds_position_mask")}
    inputs["pixel_values"] = row["pixel_values"]
    labels = row["labels"][1:]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        logits = model(**inputs).logits[0, :-1]
        loss = torch.nn.functional.cross_entropy(logits, labels, ignore_index=IGNORE)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    """`kosmos demo --model RUN --port P` as a user starts it (a subprocess), serving the taught tiny model."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    folder = taught_model(tmp_path_factory.mktemp("demo") / "model")
    port = free_port()
    log = tmp_path_factory.mktemp("demo-log") / "server.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(Path(__file__).parent.parent)}
    with open(log, "wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "kosmos", "demo", "--model", str(folder), "--host",
                                   "127.0.0.1", "--port", str(port), "--device", "cpu", "--max-new-tokens", "24"],
                                  stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 600  # a hang guard for a loaded machine, not a speed target
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"kosmos demo did not start: {log.read_text()[-2000:]}")
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _wait(browser, expression: str, what: str, seconds: float = 300):
    import time

    deadline = time.monotonic() + seconds  # a hang guard, not a speed target
    while time.monotonic() < deadline:
        value = browser.evaluate(expression)
        if value:
            return value
        time.sleep(0.25)
    pytest.fail(f"the page never showed {what}")


@pytest.mark.browser
@pytest.mark.slow
def test_demo_page_upload_ask_and_see_the_grounded_answer(demo_server, tmp_path):
    import os
    import shutil

    from PIL import Image, ImageDraw

    from grit_pipeline.views.chromium import Chromium, find_chromium
    from grit_pipeline.views.html import PALETTE

    if find_chromium() is None:
        pytest.skip("headless Chromium not installed (apt-get install chromium)")
    picture = tmp_path / "picture.png"
    image = Image.new("RGB", (320, 240), (235, 235, 230))
    draw = ImageDraw.Draw(image)
    draw.rectangle([30, 25, 130, 100], fill=(220, 30, 30))
    draw.ellipse([200, 120, 300, 220], fill=(40, 70, 220))
    image.save(picture)
    with Chromium(width=1280, height=900, timeout=300, allow_hosts=("127.0.0.1",)) as browser:
        browser.open(demo_server)
        _wait(browser, "!!document.querySelector('#picture input[type=file]')", "the upload field")
        # upload: what a file chooser does, through DevTools
        root = browser.call("DOM.getDocument", {"depth": -1, "pierce": True})["root"]["nodeId"]
        field = browser.call("DOM.querySelector", {"nodeId": root, "selector": "#picture input[type=file]"})
        browser.call("DOM.setFileInputFiles", {"files": [str(picture)], "nodeId": field["nodeId"]})
        _wait(browser, "!!document.querySelector('#picture img')", "the uploaded picture")
        # type the prompt, then press Answer
        browser.evaluate(f"""(() => {{ const box = document.querySelector('#prompt textarea, #prompt input');
            box.value = {QUESTION!r}; box.dispatchEvent(new Event('input', {{bubbles: true}})); return true; }})()""")
        browser.evaluate("document.querySelector('#submit').click(), true")
        raw = _wait(browser, "(document.querySelector('#raw textarea, #raw input') || {}).value || ''", "an answer")
        assert raw == TAUGHT
        answer = _wait(browser, "(document.querySelector('#answer') || {}).innerText || ''", "the answer's text")
        assert "a red square" in answer
        # the phrase is coloured in the answer, and its box is drawn over the picture with the same colour
        boxes = _wait(browser, """(() => {
            const masks = Array.from(document.querySelectorAll('#boxes img.mask')).filter(m => m.complete && m.naturalWidth > 0);
            const legend = Array.from(document.querySelectorAll('#boxes .legend-item'))
                .map(b => [b.innerText.trim(), getComputedStyle(b).backgroundColor]);
            const phrase = Array.from(document.querySelectorAll('#answer [style*="background"]'))
                .map(s => getComputedStyle(s).backgroundColor);
            return masks.length ? {masks: masks.length, legend: legend, phrase: phrase,
                                   base: !!document.querySelector('#boxes img.base-image')} : null;
        })()""", "the boxes")
        red, green, blue = (int(PALETTE[0][i:i + 2], 16) for i in (1, 3, 5))
        assert boxes["masks"] == 1 and boxes["base"]
        assert [name for name, _ in boxes["legend"]] == ["a red square"]
        assert boxes["legend"][0][1].startswith(f"rgba({red}, {green}, {blue}")
        assert any(colour.startswith(f"rgba({red}, {green}, {blue}") or colour == f"rgb({red}, {green}, {blue})"
                   for colour in boxes["phrase"]), boxes["phrase"]
        shot = tmp_path / "kosmos-demo.png"
        browser.screenshot(shot)
    assert Image.open(shot).size == (1280, 900)
    if os.environ.get("KOSMOS_DEMO_SCREENSHOT"):  # docs/screenshots/kosmos-demo.png is made this way (docs/demo.md)
        shutil.copyfile(shot, os.environ["KOSMOS_DEMO_SCREENSHOT"])


def test_kosmos_train_init_of_a_missing_local_folder_is_one_line(tmp_path, monkeypatch, capsys, no_hub):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "data").mkdir()
    code = kosmos_main(["train", "--data", "data", "--output", "out", "--init", "runs/nope"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1, err
    assert "--init runs/nope: the local folder does not exist" in err
