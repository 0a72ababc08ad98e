"""``zoo data encode``: precomputed-latent shards for latent models.

Reads an image shard set, runs the model's autoencoder (``Model.encode``: images in [-1, 1] to
the x0 the diffusion runs on, scaling factor included) once over every image, and writes the
same rows with a ``latent`` column (little-endian float16 or float32 bytes, shape in
index.json) in place of ``image``. Training on such shards skips the autoencoder: the loop takes
``latent`` as x0 directly, and Ray Data never reads the pixels.
"""

from __future__ import annotations

import posixpath

import fsspec
import numpy as np
import torch
from tqdm.auto import tqdm

from jobs.pack import write_index, write_shard
from jobs.shards import INDEX, ShardIndex, decode_pixels, decode_png, read_index
from zoo.errors import DataError


def encode(src: str, dest: str, model, *, batch_size: int = 64, dtype: str = "float16",
           device: str = "cpu", progress: bool = True) -> ShardIndex:
    """Encode the image shards at ``src`` with ``model`` (a zoo.Model) into latent shards at ``dest``."""
    import pyarrow.parquet as pq

    index = read_index(src)
    column = "pixels" if "pixels" in index.columns else "image"
    if column not in index.columns:
        raise DataError(f"{src}: no image column to encode (columns: {index.columns})")
    spec = model.spec
    if (index.image_size, index.channels) != (spec.image.size, spec.image.channels):
        raise DataError(f"{src}: {index.channels}-channel {index.image_size}px images; {model.name} encodes "
                        f"{spec.image.channels}-channel {spec.image.size}px images")
    fs_in, root_in = fsspec.core.url_to_fs(src)
    fs, root = fsspec.core.url_to_fs(dest)
    fs.makedirs(root, exist_ok=True)
    if fs.exists(posixpath.join(root, INDEX)):
        raise DataError(f"{dest} already holds a shard set ({INDEX}); encode into a new folder")
    model = model.to(device).eval()
    np_dtype = np.dtype(dtype).newbyteorder("<")
    shards, shape = [], None
    has_label, has_caption = "label" in index.columns, "caption" in index.columns
    bar = tqdm(total=index.rows, desc=f"encode {src}", unit="img", disable=not progress, mininterval=1.0)
    for i, info in enumerate(index.shards):
        path = posixpath.join(root_in, info.name)
        with fs_in.open(path, "rb") as f:
            rows = pq.read_table(f).to_pylist()
        out = []
        for j in range(0, len(rows), batch_size):
            chunk = rows[j : j + batch_size]
            try:
                if column == "pixels":
                    blobs = np.array([r["pixels"] for r in chunk], dtype=object)
                    pixels, bad = decode_pixels(blobs, (index.channels, index.image_size, index.image_size))
                    if bad:
                        raise ValueError(bad[0][1])
                else:
                    pixels = np.stack([decode_png(r["image"], index.image_size, index.channels) for r in chunk])
            except Exception as e:
                raise DataError(f"shard {path}: an image does not decode ({e})") from None
            x = torch.from_numpy(pixels).float().div(127.5).sub(1.0).to(device)
            with torch.no_grad():
                z = model.encode(x).float().cpu().numpy()
            shape = list(z.shape[1:])
            for r, zi in zip(chunk, z):
                out.append({"key": r["key"], "latent": zi.astype(np_dtype).tobytes(),
                            "label": r.get("label"), "caption": r.get("caption")})
            bar.update(len(chunk))
        shards.append(write_shard(fs, root, i, out, has_label, has_caption, latent=True))
    bar.close()
    columns = ["key", "latent"] + (["label"] if has_label else []) + (["caption"] if has_caption else [])
    new = ShardIndex(source=f"{src} encoded by {model.name}", columns=columns, image_size=index.image_size,
                     channels=index.channels, latent_shape=shape, latent_dtype=dtype, classes=index.classes,
                     rows=sum(s.rows for s in shards), shards=shards)
    write_index(fs, root, new)
    return new
