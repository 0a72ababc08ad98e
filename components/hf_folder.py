"""Reading and writing one part of a diffusers / transformers layout (``config.json`` + safetensors,
tokenizer files) at a local path or any fsspec URL (``s3://``...).

Remote parts are copied file by file into a temporary folder first: only the file names a part
may hold are copied, names never leave the folder, and pickle weights (``*.bin``, ``*.ckpt``,
``*.pt``, ``*.pth``) are refused with the command that converts them to safetensors.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import fsspec

PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")
CONVERT_HINT = (
    "Only safetensors weights are loaded (pickles can run code). Convert the folder once, in an environment "
    "you trust, e.g. `python -c \"from diffusers import StableDiffusionPipeline as P; "
    "P.from_pretrained('IN', use_safetensors=False).save_pretrained('OUT', safe_serialization=True)\"` "
    "(or `<Class>.from_pretrained('IN').save_pretrained('OUT', safe_serialization=True)` for one part)."
)


class LayoutError(ValueError):
    """A weights folder that is missing a part, holds pickles, or disagrees with the spec."""


def join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *parts])


def listing(url: str) -> dict[str, int]:
    """File names (relative, posix) under ``url`` -> size; empty when the folder does not exist."""
    fs, root = fsspec.core.url_to_fs(url)
    if not fs.exists(root):
        return {}
    root = root.rstrip("/")
    out = {}
    for path, info in fs.find(root, detail=True).items():
        rel = PurePosixPath(path).relative_to(PurePosixPath(root)).as_posix() if path != root else PurePosixPath(path).name
        out[rel] = info.get("size", 0)
    return out


def check_part(url: str, needs: tuple[str, ...], what: str) -> list[str]:
    """The files of the part at ``url``; a LayoutError naming the part when a needed file is
    absent or only pickle weights are there. ``needs`` entries may be alternatives "a|b"."""
    names = listing(url)
    if not names:
        raise LayoutError(f"{what}: folder {url} is missing or empty")
    for need in needs:
        options = need.split("|")
        if not any(o in names for o in options):
            pickles = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES))
            if pickles and any(o.endswith(".safetensors") for o in options):
                raise LayoutError(f"{what}: {url} holds pickle weights {pickles}, no {need}. {CONVERT_HINT}")
            raise LayoutError(f"{what}: {url} has no {' or '.join(options)} (found {sorted(names)[:8]})")
    return sorted(names)


def read_json(url: str, what: str) -> dict:
    fs, path = fsspec.core.url_to_fs(url)
    if not fs.exists(path):
        raise LayoutError(f"{what}: {url} is missing")
    try:
        with fs.open(path, "r") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise LayoutError(f"{what}: {url} is not valid JSON: {e}") from None


@contextlib.contextmanager
def local_copy(url: str, files: list[str]) -> Iterator[Path]:
    """A local folder holding ``files`` of the part at ``url``: the folder itself when local, else
    a temporary copy (removed on exit). Pickle files are never copied."""
    fs, root = fsspec.core.url_to_fs(url)
    if "file" in fs.protocol or "local" in fs.protocol:
        yield Path(root)
        return
    for name in files:
        if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts:
            raise LayoutError(f"{url}: file name {name!r} leaves its folder")
    with tempfile.TemporaryDirectory(prefix="zoo-part-") as tmp:
        dest = Path(tmp)
        for name in files:
            if name.endswith(PICKLE_SUFFIXES):
                continue
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(root.rstrip("/") + "/" + name, str(target))
        yield dest


def put_folder(local: Path, url: str) -> None:
    """Copy a local folder's files to ``url`` (a local path or any fsspec URL)."""
    fs, root = fsspec.core.url_to_fs(url)
    for f in sorted(local.rglob("*")):
        if f.is_file():
            rel = f.relative_to(local).as_posix()
            fs.makedirs(str(PurePosixPath(root) / PurePosixPath(rel).parent), exist_ok=True)
            fs.put_file(str(f), root.rstrip("/") + "/" + rel)


def check_config(config: dict, want: dict, where: str, part: str, *, ignore: tuple[str, ...] = (),
                 unsupported: tuple[str, ...] = (), kind: str = "") -> None:
    """A LayoutError naming the file (``where``) and the field where a diffusers / transformers config
    disagrees with what the spec's ``part`` gives (lists compare as tuples, floats to 1e-9), or sets
    one of the ``unsupported`` keys that ``kind`` does not implement."""
    for key, value in want.items():
        if key in ignore:
            continue
        got = config.get(key)
        got = tuple(got) if isinstance(got, list) else got
        if isinstance(value, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
            same = abs(got - value) < 1e-9
        else:
            same = got == value
        if not same:
            raise LayoutError(f"{where}: {key}={got!r} but the spec's {part} gives {value!r}")
    for key in unsupported:
        if config.get(key) is not None:
            raise LayoutError(f"{where}: {key}={config[key]!r} is not supported by {kind}")
