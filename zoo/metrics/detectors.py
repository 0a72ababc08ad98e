"""Feature detectors: uint8 images -> features (for Frechet distance, precision/recall) and class
logits (Inception Score, accuracy), as EDM's and torch-fidelity's detectors take uint8 images.

- ``inception``: the FID Inception-v3 (zoo.metrics.inception), weights from a path or URL you
  give (``inception=`` or $ZOO_INCEPTION); 2048-d pool3 features, 1008 logits. Any image size;
  grayscale is repeated to RGB.
- ``digits``: the small digits classifier (zoo.metrics.digits_classifier), built
  deterministically and cached; 64-d penultimate features, 10 logits. Only 1x16x16 images.

Each detector has an ``id`` (name, version and weights digest) that reference statistics
record, so statistics are never compared across different networks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from zoo.errors import SpecError

NAMES = ("inception", "digits")


@dataclass
class Detector:
    name: str
    id: str
    classes: int
    check: Callable[[tuple[int, ...]], None]
    run: Callable[[Tensor], dict[str, Tensor]]  # float images in [0, 1] -> {"features", "logits"}
    batch: int = 256

    @torch.inference_mode()
    def __call__(self, images: Tensor, device: torch.device | str = "cpu") -> dict[str, np.ndarray]:
        """uint8 (N, C, H, W) -> {"features": (N, D), "logits": (N, K)} as float64 numpy."""
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"{self.name} detector takes uint8 (N, C, H, W) images, got {images.dtype} {tuple(images.shape)}")
        self.check(tuple(images.shape[1:]))
        out: dict[str, list[Tensor]] = {"features": [], "logits": []}
        for i in range(0, len(images), self.batch):
            x = images[i : i + self.batch].to(device).float() / 255
            res = self.run(x)
            for k in out:
                out[k].append(res[k].double().cpu())
        return {k: torch.cat(v).numpy() for k, v in out.items()}


def to_uint8(images01: Tensor) -> Tensor:
    """Images in [0, 1] -> uint8, rounded as a PNG writer would (EDM / clean-fid quantize too)."""
    return (images01.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def inception_url(url: str | None = None) -> str:
    url = url or os.environ.get("ZOO_INCEPTION")
    if not url:
        raise SpecError(
            "FID and Inception Score need the FID Inception-v3 weights, and nothing is downloaded: pass "
            "inception='<path or URL of pt_inception-2015-12-05-6726825d.pth or a .safetensors copy>' "
            "(or set ZOO_INCEPTION). For the shipped digits, metric='digits_fid' needs no weights."
        )
    return url


def get(name: str, *, inception: str | None = None, device: torch.device | str = "cpu") -> Detector:
    """The detector ``name`` ('inception' or 'digits')."""
    if name == "inception":
        from zoo.metrics.inception import load_inception

        url = inception_url(inception)
        net, digest = load_inception(url)
        net = net.to(device)

        def check(shape: tuple[int, ...]) -> None:
            if shape[0] not in (1, 3):
                raise ValueError(f"the Inception detector takes 1- or 3-channel images, got {shape[0]} channels")

        def run(x: Tensor) -> dict[str, Tensor]:
            out = net(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x)
            return {"features": out["pool"], "logits": out["logits"]}

        return Detector("inception", f"pt_inception-2015-12-05:{digest[:16]}", 1008, check, run, batch=64)
    if name == "digits":
        from zoo.metrics.digits_classifier import VERSION, classifier

        clf = classifier().to(device)

        def check(shape: tuple[int, ...]) -> None:
            if shape != (1, 16, 16):
                raise ValueError(f"the digits detector takes 1x16x16 images (the shipped digits), got {shape}")

        def run(x: Tensor) -> dict[str, Tensor]:
            f = clf.features(x * 2 - 1)
            return {"features": f, "logits": clf.head(f)}

        return Detector("digits", f"digits_classifier_v{VERSION}", 10, check, run)
    raise SpecError(f"unknown detector {name!r}; known: {', '.join(NAMES)}")
