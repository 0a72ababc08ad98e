"""`zoo edit`: zero-shot inpainting, colorization and 2x super-resolution (CM Algorithm 4) of
images with a trained model, written as a PNG grid (first row the inputs as the model sees them,
second row the results)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

#: named masks (True = generated) for --mask
REGIONS = ("top", "bottom", "left", "right", "center")
SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def _open(path: str, channels: int, what: str):
    import fsspec
    import numpy as np
    import torch
    from PIL import Image

    try:
        with fsspec.open(path, "rb") as f:
            img = Image.open(f)
            img = img.convert("L" if channels == 1 else "RGB")
    except (OSError, ValueError) as e:
        raise ValueError(f"{what} {path}: not a readable image ({e})") from None
    arr = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)
    return arr[None] if arr.ndim == 2 else arr.permute(2, 0, 1)


def read_images(source: str, channels: int, n: int):
    """builtin:digits (its held-out split, the first n), one image file, or a folder of them."""
    import torch

    if source == "builtin:digits":
        from zoo.data import digits

        return (digits.load("heldout")[0][:n] + 1) / 2
    p = Path(source)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in SUFFIXES)[:n]
        if not files:
            raise ValueError(f"--input {source}: no {'/'.join(SUFFIXES)} images in the folder")
    else:
        files = [p]
    images = [_open(str(f), channels, "--input") for f in files]
    if len({tuple(i.shape) for i in images}) > 1:
        raise ValueError(f"--input {source}: the images differ in size")
    return torch.stack(images)


def make_mask(spec: str | None, size: int):
    """A named region of the image, or a PNG whose white (> 0.5) pixels are generated."""
    import torch

    if spec is None:
        return None
    if spec in REGIONS:
        m, h = torch.zeros(size, size, dtype=torch.bool), size // 2
        q = size // 4
        {"top": lambda: m[:h].fill_(True), "bottom": lambda: m[h:].fill_(True), "left": lambda: m[:, :h].fill_(True),
         "right": lambda: m[:, h:].fill_(True), "center": lambda: m[q:size - q, q:size - q].fill_(True)}[spec]()
        return m
    return _open(spec, 1, "--mask")[0] > 0.5


def edit(
    model_ref: str = typer.Argument(..., metavar="RUN", help="run folder, checkpoint, or catalog name (+ --weights)"),
    task: str = typer.Option(..., help="inpaint, colorize or superres"),
    input: str = typer.Option(..., "--input", help="an image, a folder of images, or builtin:digits"),
    mask: Optional[str] = typer.Option(None, help=f"inpaint: {'|'.join(REGIONS)} or a PNG (white = generate)"),
    n: int = typer.Option(8, help="images taken from a folder or builtin:digits"),
    steps: Optional[int] = typer.Option(None, help="edit steps (times t_1..t_N of the model's grid)"),
    solver: Optional[str] = typer.Option(None, help="default: the model's (consistency: one call per step)"),
    grid: Optional[str] = typer.Option(None, help="time grid kind or YAML (default: the model's)"),
    solver_steps: Optional[int] = typer.Option(None, help="a non-consistency solver's steps from each t to 0"),
    factor: int = typer.Option(2, help="superres factor"),
    seed: int = typer.Option(0),
    weights: Optional[str] = typer.Option(None, help="weights URL for a catalog name"),
    out: str = typer.Option("edit.png", help="PNG grid to write: inputs, then results"),
) -> None:
    """Zero-shot editing with a consistency model (CM Algorithm 4), or any model's solver."""
    import torch

    import zoo
    from components.editing import Colorize, SuperRes
    from zoo.cli_args import component_arg, fail

    try:
        model = zoo.load(model_ref, weights=weights)
        c, size = model.spec.image.channels, model.spec.image.size
        images = read_images(input, c, n)
        region = make_mask(mask, images.shape[-1])
        result = model.edit(images, task=task, mask=region, steps=steps, solver=component_arg(solver),
                            grid=component_arg(grid), solver_steps=solver_steps, seed=seed, factor=factor)
    except (zoo.ZooError, ValueError) as e:
        fail(e)
    if task == "inpaint":
        shown = torch.where(region.to(images.device), torch.full_like(images, 0.5), images)
    elif task == "colorize":
        shown = Colorize.luminance(images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images)[:, None]
        shown = shown.expand(-1, 3, -1, -1)
    else:
        shown = SuperRes(factor).upsample(images) if images.shape[-1] < size else images
    typer.echo(zoo.save_grid(torch.cat([shown.cpu(), result.cpu()]), out, nrow=len(images)))
