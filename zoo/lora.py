"""LoRA (Hu et al. 2021): low-rank adapters on a model's backbone, through peft (the ``[hf]`` extra).

A frozen weight W0 of a targeted layer becomes W0 + (alpha / r) B A (Hu et al., eq. 3), with
A (r x d_in) initialised randomly, B (d_out x r) at zero, so training starts from the base model
exactly and only A and B train. On ``sd_unet`` the adapter goes into diffusers'
UNet2DConditionModel through its peft integration (``add_adapter``), so the layer names are
diffusers' (``down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q``); on our UNet and
DiT through peft's generic ``inject_adapter_in_model``. Targets default to the backbone kind's
``lora_targets`` (for sd_unet the layers LCM-LoRA adapts).

    add_adapter(model, LoraSpec(rank=8), seed=0)   # the base frozen; model.adapter describes it
    merge_adapter(model)                           # W0 += (alpha / r) B A, adapter layers removed

The adapter file (diffusers' ``pytorch_lora_weights.safetensors``) is written and read by
zoo/lora_file.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from components.spec import Spec

ADAPTER = "default"  # peft's adapter name; it appears in parameter names as lora_A.default.weight
_MARK = ".lora_"  # every adapter tensor's name holds it (lora_A, lora_B, lora_embedding_A, lora_magnitude_vector)


class LoraSpec(Spec):
    """Low-rank adapters on the backbone: ``zoo.train(name, lora={"rank": 8})``."""

    rank: int = Field(gt=0, description="r of W0 + (alpha / r) B A")
    alpha: float | None = Field(None, gt=0, description="alpha of alpha / r; None: alpha = rank (scale 1)")
    target_modules: tuple[str, ...] | None = Field(
        None, min_length=1, description="layer names (or name suffixes) to adapt; None: the backbone kind's lora_targets")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter's input")
    init: Literal["kaiming", "gaussian"] = Field(
        "kaiming", description="A's initialisation (B starts at zero either way): kaiming-uniform (peft's default) or "
        "gaussian N(0, 1/r)")

    def targets(self, backbone_spec: Any) -> tuple[str, ...]:
        return self.target_modules or backbone_spec.lora_targets

    def config(self, backbone_spec: Any) -> Any:
        """The peft LoraConfig this spec means for a backbone."""
        from peft import LoraConfig

        return LoraConfig(r=self.rank, lora_alpha=self.alpha or self.rank, target_modules=list(self.targets(backbone_spec)),
                          lora_dropout=self.dropout, init_lora_weights=True if self.init == "kaiming" else "gaussian")


@dataclass(frozen=True)
class Adapter:
    """What a model's unmerged adapter is: its peft config and where it sits.

    prefix: the key prefix of the adapter file ("unet" for sd_unet, as diffusers reads it;
        "backbone" for the package's own backbones).
    module: the attribute path under the denoiser of the module the adapter was injected into.
    """

    config: Any
    prefix: str
    module: str

    def host(self, denoiser: nn.Module) -> nn.Module:
        return denoiser.get_submodule(self.module)


def host_of(backbone: nn.Module) -> tuple[nn.Module, str, str]:
    """(module to inject into, file prefix, its path under the denoiser) for a backbone."""
    if backbone.spec.kind == "sd_unet":
        return backbone.unet, "unet", "backbone.unet"
    return backbone, "backbone", "backbone"


def is_adapter_key(key: str) -> bool:
    return _MARK in key


def attach(model: Any, config: Any) -> Adapter:
    """Inject an adapter of peft ``config`` into ``model``'s backbone (random A, zero B unless the
    config says otherwise) and record it as ``model.adapter``. The base stays trainable: see
    :func:`add_adapter` for training."""
    if getattr(model, "adapter", None) is not None:
        raise ValueError(f"{model.name} already carries an unmerged adapter; merge it first (merge=True)")
    host, prefix, path = host_of(model.denoiser.backbone)
    if prefix == "unet":
        host.add_adapter(config, adapter_name=ADAPTER)  # diffusers' peft integration
    else:
        from peft import inject_adapter_in_model

        inject_adapter_in_model(config, host, adapter_name=ADAPTER)
    model.adapter = Adapter(config, prefix, path)
    return model.adapter


def add_adapter(model: Any, spec: LoraSpec, seed: int) -> Adapter:
    """Adapters of ``spec`` on ``model``'s backbone, initialised from ``seed`` alone, with every
    other weight of the denoiser frozen (requires_grad False): only A and B train."""
    targets = list(spec.targets(model.spec.backbone))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            adapter = attach(model, spec.config(model.spec.backbone))
        except ValueError as e:  # peft: target modules not found, a layer type it cannot adapt
            raise ValueError(f"lora.target_modules {targets} on {model.name}'s backbone: {e}") from None
    for name, p in model.denoiser.named_parameters():
        p.requires_grad_(is_adapter_key(name))
    if not any(p.requires_grad for p in model.denoiser.parameters()):
        raise ValueError(f"lora.target_modules {targets} match no layer of {model.name}'s backbone")
    return adapter


def adapter_state(denoiser: nn.Module) -> dict[str, Tensor]:
    """The adapter's tensors, keyed as in ``denoiser.state_dict()``."""
    return {k: v for k, v in denoiser.state_dict().items() if is_adapter_key(k)}


def _tuner_layers(root: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    out = []
    for name, module in root.named_modules():
        if isinstance(module, BaseTunerLayer) and name:
            parent, _, child = name.rpartition(".")
            out.append((root.get_submodule(parent) if parent else root, child, module))
    return out


@torch.no_grad()
def merge_adapter(model: Any) -> None:
    """Fold the adapter into the base weights (W0 += (alpha / r) B A, peft's ``merge``) and put
    the plain layers back: the model is then a model without an adapter."""
    adapter = model.adapter
    if adapter is None:
        raise ValueError(f"{model.name} carries no unmerged adapter")
    for parent, child, layer in _tuner_layers(adapter.host(model.denoiser)):
        layer.merge()
        setattr(parent, child, layer.get_base_layer())
    host = adapter.host(model.denoiser)
    if hasattr(host, "peft_config"):  # diffusers' / peft's record of injected adapters
        del host.peft_config
    if getattr(host, "_hf_peft_config_loaded", None):
        host._hf_peft_config_loaded = False
    model.adapter = None


@contextmanager
def without_adapter(model: Any) -> Iterator[nn.Module]:
    """The adapter's host module with its plain base layers in place of the adapter layers (the
    base model, unmerged), restored on exit: e.g. to save the base weights on their own."""
    host = model.adapter.host(model.denoiser)
    layers = _tuner_layers(host)
    for parent, child, layer in layers:
        setattr(parent, child, layer.get_base_layer())
    try:
        yield host
    finally:
        for parent, child, layer in layers:
            setattr(parent, child, layer)


__all__ = ["ADAPTER", "Adapter", "LoraSpec", "adapter_state", "add_adapter", "attach", "host_of", "is_adapter_key",
           "merge_adapter", "without_adapter"]
