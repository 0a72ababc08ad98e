"""The clip_text conditioner: the empty prompt is the null condition, captions drop to it in
training, captions come from digit labels, over-long prompts are errors, and the penultimate
option equals diffusers' clip_skip=1."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from components.conditioners import ClipTextSpec  # noqa: E402
from components.conditioners.digit_captions import caption  # noqa: E402
from components.random import RandomSource  # noqa: E402

TINY = dict(vocab_size=579, hidden_size=32, intermediate_size=37, num_layers=2, num_heads=4, max_length=16,
            tokenizer="builtin:digits", captions="digits")


def test_builtin_tokenizer_makes_each_caption_word_one_token(one_thread):
    c = ClipTextSpec(**TINY).build()
    ids = c.tokenize([caption(7), ""])
    assert ids.shape == (2, 16)
    eos = c.tokenizer.eos_token_id
    assert ids[0, :6].tolist()[0] == c.tokenizer.bos_token_id and ids[0, 5] == eos  # bos, 4 words, eos
    assert ids[1, 1] == eos


def test_null_dropout_and_captions_from_labels(one_thread):
    labels = torch.tensor([0, 7, 3, 9])
    keep = ClipTextSpec(**{**TINY, "drop_prob": 0.0}).build()
    drop = ClipTextSpec(**{**TINY, "drop_prob": 1.0}).build()
    null = keep.null(4)["text"]
    # a batch of four "" and one "" expanded differ by float rounding in the CPU's batched kernels
    # (2.4e-7 on some machines), so the dropped rows are the null condition to that precision
    torch.testing.assert_close(drop({"label": labels}, RandomSource.from_seed(0, 4))["text"], null, atol=1e-6, rtol=0)
    cond = keep({"label": labels}, None)["text"]
    assert torch.equal(cond, keep.encode([caption(int(y)) for y in labels]))
    assert not torch.equal(cond, null)
    assert torch.equal(keep.request(4, prompt="")["text"], null)
    half = ClipTextSpec(**{**TINY, "drop_prob": 0.5}).build()
    out = half({"caption": [caption(1)] * 64}, RandomSource.from_seed(1, 64))["text"]
    dropped = (out - null[:1]).abs().amax(dim=(1, 2)) < 1e-6
    assert 16 < int(dropped.sum()) < 48  # about half, from the step's noise


def test_bad_requests_name_the_field(one_thread):
    c = ClipTextSpec(**TINY).build()
    with pytest.raises(ValueError, match=r"is 2[0-9] tokens long; this model's conditioner.max_length is 16"):
        c.request(1, prompt="seven " * 20)
    with pytest.raises(ValueError, match="text-conditioned: pass prompt="):
        c.request(1, labels=3)
    with pytest.raises(ValueError, match="got 2 prompts for n=3"):
        c.request(3, prompt=["a", "b"])
    with pytest.raises(ValueError, match="'caption' column"):
        ClipTextSpec(**{**TINY, "captions": None}).build()({"label": torch.tensor([1])})
    with pytest.raises(ValueError, match="no tokenizer"):
        ClipTextSpec(**{**TINY, "tokenizer": None}).build().request(1, prompt="a")
    with pytest.raises(ValueError, match="vocab_size=600"):
        ClipTextSpec(**{**TINY, "vocab_size": 600})


def test_penultimate_equals_the_tower_one_layer_shorter(one_thread):
    """clip_skip = 1: the penultimate hidden state through the final layer norm is what a tower with
    its last layer removed returns (how diffusers ships SD 2.x's OpenCLIP tower: 23 of 24 layers).
    (diffusers 0.42's own clip_skip path reads text_encoder.text_model, which transformers 5 removed.)"""
    from transformers import CLIPTextConfig, CLIPTextModel

    from components.conditioners import ClipText

    full = ClipTextSpec(**TINY, penultimate=True).build()
    last = ClipTextSpec(**TINY).build()
    cfg = full.text_model.config.to_dict()
    cfg["num_hidden_layers"] = 1
    short = CLIPTextModel(CLIPTextConfig(**cfg))
    missing = short.load_state_dict(full.text_model.state_dict(), strict=False)
    assert not missing.missing_keys and all(".layers.1." in k for k in missing.unexpected_keys)
    ref = ClipText(ClipTextSpec(**{**TINY, "num_layers": 1}), text_model=short, tokenizer=full.tokenizer)
    prompts = [caption(7), ""]
    torch.testing.assert_close(full.encode(prompts), ref.encode(prompts), rtol=0, atol=1e-6)
    assert not torch.allclose(full.encode(prompts), last.encode(prompts))
