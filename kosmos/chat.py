"""``kosmos chat``: a terminal session with a trained model: an image, questions, answers with phrases and boxes.

Prompts are written with the conversation template of training (``kosmos.conversation.prompt_segments``, the
same ``--conversation-template``), after ``<grounding>`` by default so the model may link phrases to boxes.
Each answer is printed with its phrases and boxes (normalised to the image), and the boxes are drawn into a PNG
(``OUT/turn_NNN.png``). Commands: ``/image PATH`` (another image; the conversation restarts), ``/reset``,
``/quit`` (or end of input).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Answer:
    text: str                       # the answer without markup
    raw: str                        # as generated, with markup
    entities: list = field(default_factory=list)  # (phrase, [normalised xyxy boxes]) in answer order


def answer(model, processor, image, question: str, history=(), template: str = "qa", grounding: bool = True,
           max_new_tokens: int = 64, image_mode: str = "square") -> Answer:
    """One answer to ``question`` about ``image`` (PIL RGB) after the earlier ``history`` turns (greedy)."""
    import torch

    from kosmos.conversation import prompt_segments
    from kosmos.sequence import SequenceEncoder

    encoder = SequenceEncoder(processor, model.config.latent_query_num, model.config.vision_config.image_size,
                              image_mode)
    pixels = encoder.pixels(image)[0] if image is not None else None
    row = encoder.encode(prompt_segments(list(history), question, template, pixels, grounding=grounding),
                         add_eos=False)
    device = next(model.parameters()).device
    inputs = {name: row[name].unsqueeze(0).to(device)
              for name in ("input_ids", "attention_mask", "image_embeds_position_mask")}
    inputs["pixel_values"] = row["pixel_values"].to(device) if pixels is not None else None
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                no_repeat_ngram_size=3, use_cache=True,
                                pad_token_id=processor.tokenizer.pad_token_id,
                                eos_token_id=processor.tokenizer.eos_token_id)
    raw = processor.batch_decode(output[:, inputs["input_ids"].size(1):], skip_special_tokens=True)[0].strip()
    return parse_answer(raw)


def parse_answer(raw: str) -> Answer:
    """Generated text -> the answer words and its (phrase, boxes); an object with no phrase is named "(box)"."""
    from grit_pipeline.serialize import parse_grounded_text

    parsed = parse_grounded_text(raw)
    entities = [(parsed.caption[e.start:e.end] or "(box)", [tuple(round(v, 4) for v in b) for b in e.boxes])
                for e in parsed.entities]
    return Answer(" ".join(parsed.caption.split()), raw, entities)


def draw_boxes(image, entities, path: str | Path) -> Path:
    """The image with each entity's boxes and phrase drawn on it (one colour per phrase), saved as PNG at ``path``."""
    from grit_pipeline.views.draw import draw_entities

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    draw_entities(image, entities).save(path, format="PNG")
    return path


def add_answer_arguments(p) -> None:
    """The flags of a command that answers with a trained model (``kosmos chat``, ``kosmos demo``)."""
    p.add_argument("--model", required=True, help="training output dir (latest checkpoint), checkpoint dir, or "
                                                  "save_pretrained dir")
    p.add_argument("--conversation-template", default="qa", choices=("qa", "chat", "plain"),
                   help="the template the model was instruction-tuned with (kosmos/conversation.py)")
    p.add_argument("--no-grounding", action="store_true", help="no <grounding> before the conversation")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--device", default="auto")


def add_parser(sub) -> None:
    p = sub.add_parser("chat", help="talk with a trained model about an image (answers with phrases and boxes)",
                       description=__doc__.split("\n\n")[0])
    add_answer_arguments(p)
    p.add_argument("--image", help="the image to talk about (or /image PATH in the session)")
    p.add_argument("--question", action="append",
                   help="ask this and leave (repeatable: one conversation of several turns); default: interactive")
    p.add_argument("--out", default="chat_out", help="folder of the PNGs with the answers' boxes drawn")
    p.set_defaults(_run=run)


def run(args, stdin=None, stdout=None) -> int:
    from PIL import Image as PILImage

    from kosmos.predict import load_model
    from kosmos.train import resolve_device

    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    model, processor = load_model(args.model, resolve_device(args.device))
    state = {"image": None, "path": None, "history": []}

    def load(path: str) -> bool:
        try:
            with PILImage.open(path) as raw:
                state["image"] = raw.convert("RGB")
        except (OSError, ValueError) as error:
            print(f"cannot open the image {path}: {error}", file=sys.stderr)
            return False
        state["path"], state["history"] = path, []
        return True

    if args.image and not load(args.image):
        return 2
    questions = list(args.question or [])
    interactive = not questions
    turn = 0
    while True:
        if interactive:
            print("> ", end="", file=stdout, flush=True)
            line = stdin.readline()
            if not line:
                return 0
            line = line.strip()
        elif questions:
            line = questions.pop(0)
        else:
            return 0
        if not line:
            continue
        if line in ("/quit", "/exit"):
            return 0
        if line == "/reset":
            state["history"] = []
            continue
        if line.startswith("/image"):
            load(line[len("/image"):].strip())
            continue
        reply = answer(model, processor, state["image"], line, state["history"], args.conversation_template,
                       grounding=not args.no_grounding, max_new_tokens=args.max_new_tokens)
        turn += 1
        print(reply.text, file=stdout)
        for phrase, boxes in reply.entities:
            print(f"  {phrase}: " + "; ".join("(" + ", ".join(f"{v:.3f}" for v in b) + ")" for b in boxes),
                  file=stdout)
        if reply.entities and state["image"] is not None:
            png = draw_boxes(state["image"], reply.entities, Path(args.out) / f"turn_{turn:03d}.png")
            print(f"  boxes drawn in {png}", file=stdout)
        state["history"].append((line, reply.raw))
        stdout.flush()
