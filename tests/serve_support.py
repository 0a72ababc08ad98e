"""Helpers shared by the serving tests: tiny models, Serve's HTTP proxy on a free port, and a
model whose network call fails on purpose (to check that a failure is a 5xx, not a dead replica)."""

from __future__ import annotations

import torch
from safetensors.torch import save_file

import zoo
from tests.conftest import free_port, tiny_overrides

CLASSES = {"conditioner": {"kind": "class_label", "num_classes": 10, "drop_prob": 0.1}, "backbone.num_classes": 10}


def train_tiny(output: str, conditional: bool = False) -> zoo.Run:
    """A 1-second ddpm-digits (unconditional, or class-conditional with 10 classes)."""
    extra = CLASSES if conditional else {}
    return zoo.train("ddpm-digits", output=output, progress=False, **tiny_overrides(**extra))


def untrained_weights(path: str, **overrides) -> str:
    """A .safetensors of an untrained tiny ddpm-digits, for serving by catalog name + weights=."""
    model = zoo.build("ddpm-digits", **tiny_overrides(**overrides))
    save_file({k: v.contiguous() for k, v in model.trainable_state_dict().items()}, path)
    return path


def start_serve() -> None:
    """Serve's controller and HTTP proxy on 127.0.0.1 and a free port (once per Ray cluster)."""
    from ray import serve as ray_serve

    ray_serve.start(http_options={"host": "127.0.0.1", "port": free_port()})


def faulty(model: zoo.Model, fail_label: int) -> zoo.Model:
    """The class-conditional model, but its network call raises when any row asks for
    ``fail_label`` (a request that breaks the model). The class is local so that Ray ships it
    by value to the replica."""

    class Faulty(type(model)):
        @torch.no_grad()
        def sample(self, n, labels=None, **kw):
            if labels is not None and fail_label in torch.as_tensor(labels).reshape(-1).tolist():
                raise RuntimeError(f"simulated failure inside the model (label {fail_label})")
            return super().sample(n, labels=labels, **kw)

    model.__class__ = Faulty
    return model
