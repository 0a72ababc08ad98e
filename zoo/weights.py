"""Loading a denoiser's weights from a .safetensors URL or a checkpoint, with errors that name the source."""

from __future__ import annotations

from torch import Tensor

from zoo import checkpoint as ckpt
from zoo.errors import CheckpointError
from zoo.model import Model
from zoo.tensorfile import read_safetensors


def load_weights(model: Model, url: str, ema: bool = True) -> None:
    """Load weights into ``model`` from a .safetensors URL or a checkpoint / run folder (EMA unless ema=False)."""
    if url.endswith(".safetensors"):
        sd = read_safetensors(url, CheckpointError, f"weights {url}")
    else:
        c = ckpt.Checkpoint(ckpt.resolve(url))
        sd = c.tensors("ema.safetensors" if ema else "model.safetensors")
    fit_weights(model, sd, url)


def fit_weights(model: Model, sd: dict[str, Tensor], where: str) -> None:
    """Load a denoiser state dict, or a CheckpointError naming the source and the mismatch."""
    try:
        if model.adapter is None:
            model.denoiser.load_state_dict(sd)
        else:  # a LoRA run's checkpoint holds the adapter alone: exactly its tensors, no others
            keys = set(model.trainable_state_dict())
            if set(sd) != keys:
                odd = sorted(set(sd) ^ keys)[:3]
                raise RuntimeError(f"the adapter's tensors differ from the model's adapter: {odd}")
            model.denoiser.load_state_dict(sd, strict=False)
    except RuntimeError as e:
        first = str(e).splitlines()
        raise CheckpointError(f"{where}: weights do not fit {model.name}: {' '.join(first[:3])[:500]}") from None
