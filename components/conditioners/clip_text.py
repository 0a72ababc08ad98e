"""Text prompts as the condition through a CLIP text tower (Radford et al. 2021), as Stable
Diffusion conditions its UNet (Rombach et al. 2022, section 3.3): transformers' ``CLIPTextModel``
and ``CLIPTokenizer`` (the ``[hf]`` extra), loaded from a folder URL, never from a hub.

cond = {"text": (B, max_length, hidden_size)}: the last hidden state (after the final layer
norm), or with ``penultimate`` the hidden state one layer earlier through the final layer norm
(diffusers' clip_skip = 1). The null condition of classifier-free guidance is the empty prompt
""; in training each caption becomes "" with probability drop_prob (Ho & Salimans 2022, Alg. 1).
Prompts longer than max_length tokens are an error, not silently truncated.

The tower is frozen. Without ``weights`` it is built from the spec with ``init_seed`` (random,
reproducible: a tiny model's text tower); ``tokenizer = "builtin:digits"`` is the package's small
BPE over the digits' captions (clip_tokenizer.py); None means it comes with the weights folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from components.conditioners import digit_captions
from components.conditioners.clip_tokenizer import build_tokenizer, vocab_size
from components.hf_folder import LayoutError, check_part, check_config as check_fields, join, local_copy, read_json
from components.random import RandomSource
from components.spec import Spec

BUILTIN = "builtin:digits"
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")


class ClipTextSpec(Spec):
    takes: ClassVar[str] = "prompt"  # what a request conditions on: none, label or prompt
    kind: Literal["clip_text"] = "clip_text"
    vocab_size: int = Field(49408, gt=0)
    hidden_size: int = Field(768, gt=0, description="width of the text tower = the backbone's cross_attention_dim")
    intermediate_size: int = Field(3072, gt=0)
    num_layers: int = Field(12, ge=1)
    num_heads: int = Field(12, ge=1)
    max_length: int = Field(77, ge=2, description="tokens per prompt, <|startoftext|> and <|endoftext|> included")
    hidden_act: Literal["quick_gelu", "gelu"] = "quick_gelu"
    penultimate: bool = Field(False, description="use the penultimate layer's hidden state (clip_skip = 1)")
    drop_prob: float = Field(0.1, ge=0, le=1, description="caption dropout for classifier-free guidance")
    captions: Literal["digits"] | None = Field(
        None, description="captions made from class labels when a batch has labels but no captions")
    tokenizer: str | None = Field(None, description=f"URL of a CLIPTokenizer folder, {BUILTIN!r}, or None: from the weights")
    weights: str | None = Field(None, description="URL of a transformers CLIPTextModel folder (safetensors)")
    init_seed: int = Field(0, ge=0, description="seed of the random tower when there are no weights")

    @model_validator(mode="after")
    def _check(self) -> ClipTextSpec:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}")
        if self.tokenizer == BUILTIN:
            need = vocab_size(digit_captions.words())
            if self.vocab_size != need:
                raise ValueError(f"tokenizer {BUILTIN!r} has {need} tokens but vocab_size={self.vocab_size}")
        return self

    def transformers_config(self) -> dict:
        return dict(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers, num_attention_heads=self.num_heads,
            max_position_embeddings=self.max_length, hidden_act=self.hidden_act,
        )

    def build(self) -> ClipText:
        return ClipText(self)


def check_config(spec: ClipTextSpec, config: dict, where: str) -> None:
    """A LayoutError naming the file and field where a CLIPTextConfig disagrees with the spec."""
    check_fields(config, spec.transformers_config(), where, "conditioner")


def load_text_model(spec: ClipTextSpec, url: str) -> nn.Module:
    from transformers import CLIPTextModel

    files = check_part(url, ("config.json", "model.safetensors"), "text_encoder")
    check_config(spec, read_json(join(url, "config.json"), "text_encoder"), join(url, "config.json"))
    with local_copy(url, [f for f in files if f in ("config.json", "model.safetensors")]) as local:
        return CLIPTextModel.from_pretrained(str(local), use_safetensors=True)


def load_tokenizer(spec: ClipTextSpec, url: str):
    from transformers import CLIPTokenizer

    files = check_part(url, ("tokenizer.json|vocab.json",), "tokenizer")
    with local_copy(url, [f for f in files if f in TOKENIZER_FILES]) as local:
        tok = CLIPTokenizer.from_pretrained(str(local))
    if len(tok) > spec.vocab_size:
        raise LayoutError(f"tokenizer {url}: {len(tok)} tokens but the spec's conditioner.vocab_size={spec.vocab_size}")
    return tok


class ClipText(nn.Module):
    guidable = True

    def __init__(self, spec: ClipTextSpec, text_model: nn.Module | None = None, tokenizer: Any = None):
        super().__init__()
        from transformers import CLIPTextConfig, CLIPTextModel

        self.spec = spec
        if text_model is None and spec.weights:
            text_model = load_text_model(spec, spec.weights)
        if text_model is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(spec.init_seed)
                # CLIP's vocabulary ends in <|startoftext|>, <|endoftext|> (the builtin one too)
                ids = dict(bos_token_id=spec.vocab_size - 2, eos_token_id=spec.vocab_size - 1, pad_token_id=spec.vocab_size - 1)
                text_model = CLIPTextModel(CLIPTextConfig(**spec.transformers_config(), **ids))
        self.text_model = text_model.eval().requires_grad_(False)
        if tokenizer is None and spec.tokenizer == BUILTIN:
            tokenizer = build_tokenizer(digit_captions.words(), spec.max_length)
        elif tokenizer is None and spec.tokenizer is not None:
            tokenizer = load_tokenizer(spec, spec.tokenizer)
        self.tokenizer = tokenizer

    def train(self, mode: bool = True) -> ClipText:
        super().train(mode)
        self.text_model.eval()  # frozen: no dropout, whatever the model's mode
        return self

    # -- prompts -> condition --------------------------------------------------------------------
    def tokenize(self, prompts: Sequence[str]) -> Tensor:
        if self.tokenizer is None:
            raise ValueError("clip_text has no tokenizer: set conditioner.tokenizer to a folder URL, or load the "
                             "model from a diffusers folder (weights=...) that has tokenizer/")
        m = self.spec.max_length
        ids = self.tokenizer(list(prompts))["input_ids"]
        for i, row in enumerate(ids):
            if len(row) > m:
                raise ValueError(f"prompt {i} ({prompts[i][:60]!r}) is {len(row)} tokens long; this model's "
                                 f"conditioner.max_length is {m} (start and end tokens included)")
        out = self.tokenizer(list(prompts), padding="max_length", max_length=m, return_tensors="pt")
        return out["input_ids"]

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> Tensor:
        ids = self.tokenize(prompts).to(self.text_model.device)
        if self.spec.penultimate:
            out = self.text_model(ids, output_hidden_states=True)
            inner = getattr(self.text_model, "text_model", self.text_model)  # transformers < 5 nests it
            return inner.final_layer_norm(out.hidden_states[-2])
        return self.text_model(ids).last_hidden_state

    def forward(self, batch: dict[str, Any], rng: RandomSource | None = None) -> dict[str, Tensor]:
        """Training condition from a batch's captions ("caption", or "label" with ``captions``);
        each caption dropped to "" with drop_prob."""
        if "caption" in batch:
            captions = [str(c) for c in batch["caption"]]
        elif "label" in batch and self.spec.captions == "digits":
            labels = torch.as_tensor(batch["label"]).tolist()
            phrasing = (rng.rand() * len(digit_captions.PHRASINGS)).long().tolist() if rng is not None else [0] * len(labels)
            captions = [digit_captions.caption(y, k) for y, k in zip(labels, phrasing)]
        else:
            raise ValueError("text-conditioned training needs a 'caption' column in the data "
                             "(or 'label' with conditioner.captions='digits')")
        if rng is not None and self.spec.drop_prob > 0:
            drop = (rng.rand() < self.spec.drop_prob).tolist()
            captions = ["" if d else c for c, d in zip(captions, drop)]
        return {"text": self.encode(captions)}

    def request(self, n: int, labels: Any = None, prompt: str | Sequence[str] | None = None) -> dict[str, Tensor]:
        """Sampling condition: one prompt for all n samples, n prompts, or None (the null prompt)."""
        if labels is not None:
            raise ValueError("this model is text-conditioned: pass prompt=, not labels=")
        if prompt is None:
            return self.null(n)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not all(isinstance(p, str) for p in prompts):
            raise ValueError("prompt must be a string or a list of strings")
        if len(prompts) == 1:
            return {"text": self.encode(prompts).expand(n, -1, -1)}
        if len(prompts) != n:
            raise ValueError(f"got {len(prompts)} prompts for n={n} samples")
        return {"text": self.encode(prompts)}

    def null(self, n: int) -> dict[str, Tensor]:
        return {"text": self.encode([""]).expand(n, -1, -1)}

    @property
    def caption_classes(self) -> int | None:
        """How many classes the captions name (``captions``), or None: a model without them has
        no prompts of its own to be evaluated with."""
        return len(digit_captions.NAMES) if self.spec.captions == "digits" else None

    def captions_for(self, labels: Sequence[int]) -> list[str]:
        """The prompts that name these classes (the first phrasing: "a handwritten digit seven"),
        which evaluation samples a captioned model with and scores digits_accuracy against."""
        if self.spec.captions != "digits":
            raise ValueError("conditioner.captions is not set: this model has no prompts made from class labels")
        return [digit_captions.caption(int(y)) for y in labels]
