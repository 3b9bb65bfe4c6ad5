"""``kosmos export RUN --output DIR``: a model folder that stock transformers loads, with no grit installed.

``Kosmos2ForConditionalGeneration.from_pretrained(DIR)`` and ``AutoProcessor.from_pretrained(DIR)`` read what
this writes: the model's safetensors weights and config, the processor (tokenizer + image processor) and a
README.md with the lines that load it and generate. Greedy (or beam) generation from the folder gives the same
tokens, text and boxes as ``kosmos predict`` on the same square images and prompts (tested).

Only a model of the ``resampler`` connector exports: it *is* transformers' ``Kosmos2ForConditionalGeneration``
(the ``paper`` preset, a fine-tuned release, or any run trained with ``--connector resampler``). The ``linear``
and ``merged`` connectors of the small presets have no class in transformers, and the export refuses them in one
line rather than shipping them: loading them without grit would take ``trust_remote_code`` (Python run from the
folder, which grit never does with a model it loads: safetensors only), and the stock class would load such a
folder with a freshly random resampler and one warning, generating noise.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

EXPORTABLE = ("resampler",)


class ExportError(ValueError):
    """A model that cannot be exported, or a folder that cannot be written (one-line message)."""


def model_folder(run: str | Path) -> Path:
    """The ``save_pretrained`` folder a run names: a training output folder's latest checkpoint, a checkpoint's
    ``model``, or the folder itself (``RUN/best``, any ``save_pretrained`` folder), as ``kosmos predict --model``."""
    from kosmos.checkpoint import latest_checkpoint

    root = Path(run)
    if not root.is_dir():
        raise ExportError(f"{root} is not a folder")
    if (root / "checkpoints").is_dir():
        try:
            root = latest_checkpoint(root / "checkpoints") or root
        except FileNotFoundError as error:
            raise ExportError(str(error)) from None
    if (root / "model").is_dir():
        root = root / "model"
    if not (root / "config.json").is_file():
        raise ExportError(f"{Path(run)} holds no model (no config.json in {root}; give a kosmos train --output "
                          f"folder, a checkpoint or a save_pretrained folder)")
    return root


def check_exportable(config, source: str | Path = "RUN") -> None:
    """Refuse (one line) a model whose connector stock transformers' Kosmos-2 cannot hold."""
    from kosmos.modeling import connector_of

    connector = connector_of(config)
    if connector not in EXPORTABLE:
        raise ExportError(
            f"{source}: its model has the {connector} connector, which transformers' Kosmos2ForConditionalGeneration "
            f"cannot hold; only {' and '.join(EXPORTABLE)}-connector models export (the paper preset, a fine-tuned "
            f"release, or kosmos train --connector resampler); load this one with kosmos predict --model")


def model_card(config, processor, source: Path, parameters: int) -> str:
    """README.md of the exported folder: what it is and the lines that run it with stock transformers."""
    import transformers

    slots, side = config.latent_query_num, config.vision_config.image_size
    slot_argument = "" if slots == processor.num_image_tokens else f", num_image_tokens={slots}"
    return f"""# Kosmos-2 trained with grit

Exported by `kosmos export` from `{source}`: {parameters / 1e6:.2f}M parameters, {side} x {side} px images,
{slots} image slots (the resampler's latent queries), a {len(processor.tokenizer)}-token vocabulary. Loads with
stock transformers (written with {transformers.__version__}); grit is not needed.

```python
from PIL import Image
from transformers import AutoProcessor, Kosmos2ForConditionalGeneration

model = Kosmos2ForConditionalGeneration.from_pretrained("THIS_FOLDER").eval()
processor = AutoProcessor.from_pretrained("THIS_FOLDER")
image = Image.open("image.jpg").convert("RGB")
inputs = processor(text="<grounding><phrase> a red square</phrase>", images=image, return_tensors="pt"{slot_argument})
ids = model.generate(pixel_values=inputs["pixel_values"], input_ids=inputs["input_ids"],
                     attention_mask=inputs["attention_mask"],
                     image_embeds_position_mask=inputs["image_embeds_position_mask"],
                     max_new_tokens=32, do_sample=False)
text = processor.batch_decode(ids, skip_special_tokens=True)[0]
caption, entities = processor.post_process_generation(text)  # entities: (phrase, span, [(x1, y1, x2, y2)])
```
{"" if not slot_argument else f'''
`num_image_tokens={slots}`: the processor's number of image slots must be the model's `latent_query_num`;
transformers' processor does not save it, and its default is the release's 64.
'''}
The processor centre-crops the image to a square; `kosmos predict` fits the whole image into the square by
default (`--image-mode square`). On square images both see the same pixels and generate the same tokens.
"""


def export_model(run: str | Path, output: str | Path) -> dict:
    """Write the run's model + processor to ``output`` (a new or empty folder) for stock transformers; the
    folder appears whole or not at all."""
    from transformers import Kosmos2Config

    from kosmos.evaluate.model import load_model

    source = model_folder(run)
    try:
        config = Kosmos2Config.from_pretrained(str(source))
    except (OSError, ValueError) as error:
        raise ExportError(f"{source}/config.json is not a Kosmos-2 config ({str(error).splitlines()[0]})") from None
    check_exportable(config, run)
    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ExportError(f"--output {output} exists and is not an empty folder")
    import torch

    model, processor = load_model(str(source), torch.device("cpu"))
    if type(model).__name__ != "Kosmos2ForConditionalGeneration":  # model_class's choice for the resampler
        raise ExportError(f"{source}: loaded as {type(model).__name__}, not Kosmos2ForConditionalGeneration")
    parameters = sum(p.numel() for p in model.parameters())
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f"{output.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    (tmp / "README.md").write_text(model_card(config, processor, source, parameters))
    if output.exists():
        output.rmdir()  # empty, checked above
    os.replace(tmp, output)
    return {"output": str(output), "source": str(source), "parameters": parameters,
            "image_size": config.vision_config.image_size, "num_image_tokens": config.latent_query_num,
            "files": sorted(p.name for p in output.iterdir())}


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write a model folder that stock transformers loads (resampler connector)",
                       description="Write RUN's model (latest checkpoint; or RUN/best, a checkpoint, any "
                                   "save_pretrained folder) as a folder Kosmos2ForConditionalGeneration and "
                                   "AutoProcessor load without grit. Small-preset connectors (linear, merged) "
                                   "have no transformers class and are refused.")
    p.add_argument("run", metavar="RUN", help="kosmos train --output folder, RUN/best, a checkpoint or a "
                                              "save_pretrained folder")
    p.add_argument("--output", required=True, help="the folder to write (new or empty)")
    p.set_defaults(_run=run)


def run(args) -> int:
    from grit_pipeline.safe_load import UnsafeFileError

    try:
        summary = export_model(args.run, args.output)
    except (ExportError, UnsafeFileError, OSError) as error:
        print(f"kosmos export: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0
