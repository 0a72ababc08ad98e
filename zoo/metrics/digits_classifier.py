"""A small CNN classifier of the shipped 16x16 digits, built deterministically from the training
split (seeded init and order, ~10 s on a CPU) and cached under $ZOO_CACHE (default
~/.cache/diffusion-zoo). Its 64-d penultimate features give the "digits feature-FD" of samples
against the held-out split; its argmax gives their class histogram and conditional accuracy.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save
from torch import Tensor, nn

from zoo.data import digits
from zoo.urls import write_whole

VERSION = 1
FEATURES = 64


class DigitsClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),  # 8x8
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(),  # 4x4
            nn.Flatten(), nn.Linear(64 * 16, FEATURES), nn.ReLU(),
        )
        self.head = nn.Linear(FEATURES, 10)

    def features(self, images: Tensor) -> Tensor:
        """images (N, 1, 16, 16) in [-1, 1] -> (N, 64) penultimate features."""
        return self.body(images)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images))

    @torch.no_grad()
    def embed(self, images: Tensor, batch: int = 512) -> Tensor:
        return torch.cat([self.features(images[i : i + batch].float()) for i in range(0, len(images), batch)])

    @torch.no_grad()
    def predict(self, images: Tensor, batch: int = 512) -> Tensor:
        return torch.cat([self(images[i : i + batch].float()).argmax(1) for i in range(0, len(images), batch)])


def _train(epochs: int = 20, seed: int = 0) -> DigitsClassifier:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x, y = digits.load("train")
    model = DigitsClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            idx = order[i : i + 64]
            shift = torch.randint(-1, 2, (2,), generator=g).tolist()  # +-1 px jitter
            xb = torch.roll(x[idx], shifts=shift, dims=(2, 3))
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def cache_path() -> Path:
    root = Path(os.environ.get("ZOO_CACHE", Path.home() / ".cache" / "diffusion-zoo"))
    return root / f"digits_classifier_v{VERSION}.safetensors"


@functools.lru_cache(maxsize=1)
def classifier() -> DigitsClassifier:
    """The cached classifier, trained on first use."""
    path = cache_path()
    model = DigitsClassifier()
    if path.is_file():
        try:
            model.load_state_dict(load_file(str(path)))
            return model.eval()
        except Exception:  # a stale or broken cache is rebuilt, never trusted
            path.unlink(missing_ok=True)
    with torch.random.fork_rng():
        model = _train()
    write_whole(str(path), save(model.state_dict()))  # workers that train it at once never read half a file
    return model
