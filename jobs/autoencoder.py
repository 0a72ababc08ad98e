"""``zoo train-autoencoder``: fit a catalog entry's KL-VAE on its training images, before the
diffusion model is trained in its latent space (Rombach et al. 2022 train the two stages apart).

The recipe is the spec's ``autoencoder.train`` (steps, batch_size, lr, seed): Adam at a constant
lr on the loss of ``KlVae.loss`` (L1 + L2 reconstruction of a posterior sample + kl_weight * KL,
appendix G without the perceptual and adversarial terms). Batch k is drawn from a generator
seeded by (seed, k), so the same spec fits the same weights. The result is a diffusers
``AutoencoderKL`` folder at ``<output>/<name>-vae-<hash>/`` (the hash of the autoencoder spec),
which ``autoencoder.weights`` then names; an existing complete folder is reused.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import time
from typing import Any

import fsspec
import torch

from components.autoencoders import KlVaeSpec
from components.random import derive_seed
from zoo.errors import DataError, SpecError
from zoo.run import absolute_paths, resolve_run
from zoo.specs import RunSpec
from zoo.tensorfile import read_tensor_file


def images_of(data: str | None) -> torch.Tensor:
    """The training images in [-1, 1] of an in-memory source (builtin:digits or a .safetensors file)."""
    if data == "builtin:digits":
        from zoo.data import digits

        return digits.load("train")[0]
    if data and data.endswith(".safetensors"):
        columns = read_tensor_file(data)
        if "image" not in columns:
            raise DataError(f"{data}: no 'image' column to fit the autoencoder on (columns: {sorted(columns)})")
        return columns["image"].float()
    raise DataError(f"data={data!r}: the autoencoder is fitted on builtin:digits or a .safetensors file with an "
                    "'image' column")


def folder(run: RunSpec, output: str) -> str:
    body = json.dumps(run.model.autoencoder.model_dump(mode="json", exclude={"weights"}), sort_keys=True)
    body += json.dumps({"data": run.train.data})
    return posixpath.join(output.rstrip("/"), f"{run.name}-vae-{hashlib.sha256(body.encode()).hexdigest()[:12]}")


def train_autoencoder(model: str | RunSpec, *, output: str | None = None, progress: bool = True,
                      **overrides: Any) -> str:
    """Fit the entry's KL-VAE (``autoencoder.train``) and return the URL of its diffusers folder."""
    run = absolute_paths(resolve_run(model, overrides))
    ae = run.model.autoencoder
    if not isinstance(ae, KlVaeSpec) or ae.train is None:
        raise SpecError(f"{run.name}: autoencoder.train is not set (autoencoder kind {ae.kind!r}); only a kl_vae with "
                        "a training recipe is fitted by train-autoencoder")
    url = folder(run, output or run.train.output)
    fs, path = fsspec.core.url_to_fs(url)
    if fs.exists(posixpath.join(path, "diffusion_pytorch_model.safetensors")):
        return url
    images = images_of(run.train.data)
    if images.shape[1:] != (run.model.image.channels, run.model.image.size, run.model.image.size):
        raise DataError(f"{run.train.data}: images {tuple(images.shape[1:])} but {run.name} takes "
                        f"{run.model.image.channels}x{run.model.image.size}x{run.model.image.size}")
    recipe = ae.train
    with torch.random.fork_rng(devices=[]):
        vae = ae.model_copy(update={"weights": None}).build().train()
        opt = torch.optim.Adam(vae.parameters(), lr=recipe.lr)
        t0, n = time.perf_counter(), len(images)
        for step in range(recipe.steps):
            g = torch.Generator().manual_seed(derive_seed(recipe.seed, "vae", step))
            x = images[torch.randint(0, n, (recipe.batch_size,), generator=g)]
            loss, parts = vae.loss(x, g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if progress and ((step + 1) % 100 == 0 or step + 1 == recipe.steps):
                print(f"train-autoencoder {run.name}: step {step + 1}/{recipe.steps} recon {parts['recon']:.4f} "
                      f"kl {parts['kl']:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    vae.eval().save(url)
    return url


def with_fitted_autoencoder(run: RunSpec, progress: bool = True) -> RunSpec:
    """The run with its KL-VAE fitted first when it has a recipe and no weights (zoo.train's first stage)."""
    ae = run.model.autoencoder
    if not isinstance(ae, KlVaeSpec) or ae.train is None or ae.weights:
        return run
    url = train_autoencoder(run, progress=progress)
    model = run.model.model_copy(update={"autoencoder": ae.model_copy(update={"weights": url})})
    return run.model_copy(update={"model": model})
