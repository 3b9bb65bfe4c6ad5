"""kosmos presets, from-scratch tokenizer and processor."""
import pytest
import torch

from kosmos.presets import PRESETS, build_config, build_model, count_parameters, get_preset
from kosmos.tokenizer import (NUM_PATCH_INDEX_TOKENS, TAG_TOKENS, build_processor, check_processor,
                              load_processor, train_tokenizer)

CAPTIONS = [
    "a red square on a white background", "a blue circle and a green square on a white background",
    "two yellow circles next to a small dog", "a man riding a horse in a field of flowers",
] * 10


@pytest.fixture(scope="module")
def processor():
    return build_processor(train_tokenizer(CAPTIONS, vocab_size=120), image_size=64)


def test_tokenizer_has_every_kosmos_token_with_release_ids(processor):
    tok = processor.tokenizer
    assert [tok.convert_ids_to_tokens(i) for i in range(4)] == ["<s>", "<pad>", "</s>", "<unk>"]
    vocab = tok.get_vocab()
    for token in TAG_TOKENS + [f"<patch_index_{i:04d}>" for i in (0, 513, NUM_PATCH_INDEX_TOKENS - 1)]:
        assert token in vocab
    ids = [vocab[f"<patch_index_{i:04d}>"] for i in range(NUM_PATCH_INDEX_TOKENS)]
    assert ids == list(range(ids[0], ids[0] + NUM_PATCH_INDEX_TOKENS))  # one contiguous block
    check_processor(processor, latent_query_num=8)
    # each markup token is one token, whatever the spacing around it
    pieces = tok.tokenize("<grounding> a dog<phrase> a dog</phrase><object><patch_index_0044><patch_index_0863>"
                          "</delimiter_of_multi_objects/><patch_index_0001><patch_index_0002></object>")
    assert pieces[0] == "<grounding>" and "<patch_index_0863>" in pieces and "</delimiter_of_multi_objects/>" in pieces


def test_processor_round_trip_and_image_slots(processor, tmp_path):
    from PIL import Image

    processor.save_pretrained(tmp_path)
    reloaded = load_processor(tmp_path)
    image = Image.new("RGB", (90, 64), (200, 10, 10))
    text = "<grounding> a red<phrase> square</phrase><object><patch_index_0000><patch_index_1023></object> here"
    a = processor(images=image, text=text, num_image_tokens=8, return_tensors="pt")
    b = reloaded(images=image, text=text, num_image_tokens=8, return_tensors="pt")
    assert torch.equal(a["input_ids"], b["input_ids"])
    assert torch.allclose(a["pixel_values"], b["pixel_values"])
    assert a["pixel_values"].shape == (1, 3, 64, 64)
    assert int(a["image_embeds_position_mask"].sum()) == 8
    decoded = reloaded.batch_decode(a["input_ids"], skip_special_tokens=True)[0]
    caption, entities = reloaded.post_process_generation(decoded)
    assert caption == "a red square here"
    assert entities == [("square", (6, 12), [(0.015625, 0.015625, 0.984375, 0.984375)])]


def test_presets_build_consistent_configs():
    paper = build_config(get_preset("paper"), vocab_size=65037)
    assert (paper.text_config.embed_dim, paper.text_config.layers, paper.text_config.attention_heads,
            paper.text_config.ffn_dim, paper.latent_query_num) == (2048, 24, 32, 8192, 64)
    assert (paper.vision_config.hidden_size, paper.vision_config.num_hidden_layers,
            paper.vision_config.patch_size, paper.vision_config.image_size) == (1024, 24, 14, 224)
    for preset in PRESETS.values():
        assert preset.text_hidden % preset.text_heads == 0 and preset.vision_hidden % preset.vision_heads == 0
        assert preset.image_size % preset.patch_size == 0
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("huge")


def test_tiny_model_forward_and_generate(processor):
    from PIL import Image

    model = build_model(get_preset("tiny"), len(processor.tokenizer), seed=0)
    assert count_parameters(model) < 1_000_000
    again = build_model(get_preset("tiny"), len(processor.tokenizer), seed=0)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), again.parameters()))
    enc = processor(images=Image.new("RGB", (64, 64)), text="<grounding><phrase> a dog</phrase>",
                    num_image_tokens=model.config.latent_query_num, return_tensors="pt")
    out = model(**enc, labels=enc["input_ids"])
    assert torch.isfinite(out.loss)
    generated = model.generate(**enc, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert generated.shape[1] == enc["input_ids"].shape[1] + 3
