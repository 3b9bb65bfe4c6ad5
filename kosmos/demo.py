"""``kosmos demo``: a local web page (Gradio) to talk with a trained model about your own picture.

Upload an image, type a prompt, and the answer comes back with each grounded phrase coloured and its boxes drawn
over the image in the same colour, as on the official Kosmos-2 demo page. The answer is produced by
``kosmos chat``'s own path (``kosmos.chat.answer``: the conversation template of training, ``<grounding>`` first,
greedy decoding) and read back with ``kosmos.chat.parse_answer``'s parser. Gradio is the optional extra ``demo``
(``pip install 'grit[demo]'``); the page serves on ``--host``/``--port`` and is never shared through Gradio's
relay unless ``--share`` is given.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

INSTALL_HINT = "pip install 'grit[demo]'"
DEFAULT_PROMPT = "What is in this picture?"
TITLE = "Kosmos-2: ask about your picture"


@dataclass
class Shown:
    """What the page shows for one answer."""

    segments: list           # (text, label or None) pieces of the answer, in order, for gr.HighlightedText
    annotations: list        # ((x1, y1, x2, y2) pixels, label) for gr.AnnotatedImage
    colours: dict            # label -> "#rrggbb", shared by both
    raw: str                 # the generated text with its markup


def import_gradio():
    """The ``gradio`` module, or ``ImportError`` whose message is the one line to show."""
    try:
        import gradio
    except ImportError:
        raise ImportError(f"kosmos demo needs gradio: {INSTALL_HINT}") from None
    return gradio


def shown_answer(raw: str, size: tuple[int, int]) -> Shown:
    """A generated answer -> its highlighted pieces and its boxes in pixels of an image of ``size`` (w, h).

    Entity i is labelled with its phrase (``phrase (2)`` when an earlier entity has the same words) and coloured
    ``colour_of(i)``, the colour ``grit ground --draw`` and ``kosmos chat`` give it; an object with no phrase is
    labelled ``(box)``."""
    from grit_pipeline.serialize import parse_grounded_text
    from grit_pipeline.views.html import PALETTE

    parsed = parse_grounded_text(raw)
    caption = parsed.caption
    width, height = size
    labels: list[str] = []
    for entity in parsed.entities:
        phrase = " ".join(caption[entity.start:entity.end].split()) or "(box)"
        label, n = phrase, 1
        while label in labels:
            n += 1
            label = f"{phrase} ({n})"
        labels.append(label)
    colours = {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(labels)}
    segments, position = [], 0
    for entity, label in sorted(zip(parsed.entities, labels), key=lambda pair: pair[0].start):
        if entity.end <= entity.start or entity.start < position:
            continue  # an object without a phrase (or overlapping one): boxes only
        if entity.start > position:
            segments.append((caption[position:entity.start], None))
        segments.append((caption[entity.start:entity.end], label))
        position = entity.end
    if position < len(caption):
        segments.append((caption[position:], None))
    annotations = []
    for entity, label in zip(parsed.entities, labels):
        for box in entity.boxes:
            x1, y1, x2, y2 = (min(max(float(v), 0.0), 1.0) for v in box)
            annotations.append(((round(x1 * width), round(y1 * height), round(x2 * width), round(y2 * height)),
                                label))
    return Shown(segments, annotations, colours, raw)


def build_demo(model, processor, template: str = "qa", grounding: bool = True, max_new_tokens: int = 64,
               title: str = TITLE):
    """The page as a ``gradio.Blocks`` (not yet launched): image and prompt in, coloured answer and boxes out."""
    gr = import_gradio()
    from kosmos.chat import answer

    def respond(image, prompt):
        if image is None:
            raise gr.Error("upload an image first")
        image = image.convert("RGB")
        reply = answer(model, processor, image, (prompt or "").strip() or DEFAULT_PROMPT, template=template,
                       grounding=grounding, max_new_tokens=max_new_tokens)
        shown = shown_answer(reply.raw, image.size)
        return (gr.HighlightedText(value=shown.segments, color_map=shown.colours),
                gr.AnnotatedImage(value=(image, shown.annotations), color_map=shown.colours),
                shown.raw)

    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(f"## {title}\nUpload a picture, ask about it: the phrases of the answer are coloured and their "
                    "boxes drawn in the same colour.")
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="pil", label="Your picture", elem_id="picture")
                prompt = gr.Textbox(label="Prompt", value=DEFAULT_PROMPT, elem_id="prompt")
                submit = gr.Button("Answer", variant="primary", elem_id="submit")
            with gr.Column():
                boxes = gr.AnnotatedImage(label="Boxes", elem_id="boxes")
                text = gr.HighlightedText(label="Answer", elem_id="answer", show_legend=False,
                                          show_inline_category=False)
                raw = gr.Textbox(label="Generated text (with its markup)", elem_id="raw", interactive=False)
        submit.click(respond, inputs=[image, prompt], outputs=[text, boxes, raw], api_name="answer")
        prompt.submit(respond, inputs=[image, prompt], outputs=[text, boxes, raw])
    return demo


def add_parser(sub) -> None:
    from kosmos.chat import add_answer_arguments

    p = sub.add_parser("demo", help="a local web page to ask a trained model about your picture (gradio)",
                       description=__doc__.split("\n\n")[0])
    add_answer_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port to serve on (default 7860)")
    p.add_argument("--share", action="store_true", help="also publish the page through Gradio's share relay "
                                                        "(off by default)")
    p.set_defaults(_run=run)


def run(args) -> int:
    try:
        import_gradio()
    except ImportError as error:
        print(str(error), file=sys.stderr)
        return 2
    if not 0 < args.port < 65536:
        print(f"kosmos demo: --port {args.port}: choose a port in 1..65535", file=sys.stderr)
        return 2
    if args.max_new_tokens < 1:
        print(f"kosmos demo: --max-new-tokens {args.max_new_tokens}: give 1 or more", file=sys.stderr)
        return 2
    from kosmos.evaluate.model import load_model, resolve_device

    model, processor = load_model(args.model, resolve_device(args.device))
    demo = build_demo(model, processor, args.conversation_template, grounding=not args.no_grounding,
                      max_new_tokens=args.max_new_tokens)
    print(f"kosmos demo: serving {args.model} on http://{args.host}:{args.port} (Ctrl-C stops it)", file=sys.stderr)
    demo.queue(default_concurrency_limit=1)  # one model, one answer at a time
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, inbrowser=False, quiet=True)
    return 0
