"""LPIPS as the distance d of CD / CT / iCT (Zhang et al. 2018; Consistency Models section 5 use
it with VGG), through the `lpips` package, with BOTH its weights given by path and nothing
downloaded:

- ``weights``: the linear layers (lpips' own ``weights/v0.1/<net>.pth`` keys ``lin0.model.1.weight``
  ..., converted to .safetensors),
- ``backbone``: the trunk, torchvision's ``vgg16`` / ``alexnet`` state dict (keys ``features.N.*``)
  or lpips' own layout (``net.sliceK.N.*``), as .safetensors.

The module is built with ``lpips.LPIPS(pretrained=False, pnet_rand=True)`` (random trunk, random
linear layers, no file opened) and then loaded; pickles are refused. As openai's
consistency_models does, images smaller than 256 are upsampled bilinearly to 224 x 224 before the
network (``resize``); inputs are in [-1, 1] (lpips' own convention); 1-channel images are
repeated to 3. (openai's code uses piq's LPIPS with ``replace_pooling=True``, i.e. average
instead of max pooling in VGG; lpips keeps VGG's max pooling.)
"""

from __future__ import annotations

import re
import warnings
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from components.spec import Spec


class LpipsSpec(Spec):
    kind: Literal["lpips"] = "lpips"
    net: Literal["vgg", "alex"] = Field("vgg", description="the trunk (CM: VGG16)")
    weights: str | None = Field(None, description="the linear layers, .safetensors (lpips' v0.1 <net>.pth converted)")
    backbone: str | None = Field(None, description="the trunk's weights, .safetensors (torchvision's vgg16 / alexnet)")
    resize: int | None = Field(224, ge=16, description="upsample images smaller than 256 to this size (CM: 224)")

    def build(self) -> Lpips:
        return Lpips(self)


def _read(path: str, field: str) -> dict[str, Tensor]:
    import fsspec
    from safetensors.torch import load

    if not path.endswith(".safetensors"):
        raise ValueError(
            f"lpips.{field}: {path!r} is not a .safetensors file; pickled weights are never loaded. Convert once with "
            "python -c \"import torch, safetensors.torch as s; "
            "s.save_file(torch.load('IN.pth', weights_only=True), 'OUT.safetensors')\"")
    with fsspec.open(path, "rb") as f:
        return load(f.read())


def _trunk_key(key: str) -> str:
    """torchvision's ``features.N.weight`` -> lpips' ``net.sliceK.N.weight`` is found by N alone,
    so both layouts map to ``N.weight``."""
    m = re.fullmatch(r"(?:features|net\.slice\d+)\.(\d+\.\w+)", key)
    return m.group(1) if m else key


class Lpips(nn.Module):
    """d(a, b) per row: lpips.LPIPS on the given weights, frozen, in eval mode."""

    def __init__(self, spec: LpipsSpec):
        super().__init__()
        import lpips

        self.spec = spec
        for field in ("weights", "backbone"):
            if getattr(spec, field) is None:
                raise ValueError(f"lpips.{field} is not set: LPIPS weights are never downloaded; give "
                                 f"distance.weights=<lin .safetensors> and distance.backbone=<{spec.net} .safetensors>")
        # built on the meta device: no random init of the trunk (torchvision's whole VGG16, 138M
        # parameters with its classifier, took ~3 s), every tensor is assigned from the files below
        with warnings.catch_warnings(), torch.device("meta"):  # torchvision's deprecation of pretrained=False
            warnings.simplefilter("ignore")
            self.net = lpips.LPIPS(pretrained=False, pnet_rand=True, net=spec.net, verbose=False)
        own = self.net.state_dict()
        trunk = {_trunk_key(k): k for k in own if k.startswith("net.")}
        given = {}
        for k, v in _read(spec.backbone, "backbone").items():
            if _trunk_key(k) not in trunk:
                if k.startswith("classifier."):  # a whole torchvision model: its head is not the trunk
                    continue
                raise ValueError(f"lpips.backbone {spec.backbone}: unexpected tensor {k!r} for the {spec.net} trunk")
            given[trunk[_trunk_key(k)]] = v
        for k, v in _read(spec.weights, "weights").items():
            if not re.fullmatch(r"lin\d+\..+", k) or k not in own:
                raise ValueError(f"lpips.weights {spec.weights}: unexpected tensor {k!r} (expected lin0.model.1.weight ...)")
            given[k] = v
        # lins.K.* are the same tensors as linK.* (lpips keeps both names); scaling_layer: constants
        missing = sorted(k for k in own if k not in given and not k.startswith(("scaling_layer.", "lins.")))
        if missing:
            raise ValueError(f"lpips: no weights given for {missing[:4]} ... ({len(missing)} tensors; "
                             f"backbone {spec.backbone}, weights {spec.weights})")
        for k, v in given.items():
            if v.shape != own[k].shape:
                raise ValueError(f"lpips: {k} has shape {tuple(v.shape)}, the {spec.net} network needs {tuple(own[k].shape)}")
            given[k] = v.to(own[k].dtype)  # a half-precision file is computed in float32, as before
        self.net.load_state_dict(given, strict=False, assign=True)
        self.net.requires_grad_(False).eval()
        left = [k for k, v in self.net.state_dict().items() if v.is_meta]
        if left:  # the constants (scaling_layer) are real tensors; lins.K are linK
            raise ValueError(f"lpips: {left[:4]} were not given ({len(left)} tensors)")

    def train(self, mode: bool = True) -> Lpips:  # always eval: a fixed metric
        return self

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        if a.shape[1] == 1:
            a, b = a.expand(-1, 3, -1, -1), b.expand(-1, 3, -1, -1)
        if a.ndim != 4 or a.shape[1] != 3:
            raise ValueError(f"lpips compares images (B, 3 or 1, H, W), got {tuple(a.shape)}: use l2 / pseudo_huber here")
        if self.spec.resize is not None and a.shape[-1] < 256:  # openai's consistency_models
            a = F.interpolate(a, size=self.spec.resize, mode="bilinear")
            b = F.interpolate(b, size=self.spec.resize, mode="bilinear")
        return self.net(a.float(), b.float()).flatten()
