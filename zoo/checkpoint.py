"""Checkpoints: safetensors weights + EMA + optimizer, step, and the spec as JSON, on any fsspec URL.

A checkpoint is a folder:

    spec.json            the RunSpec that trained it (the spec that serves it)
    model.safetensors    the denoiser's weights
    ema.safetensors      their exponential moving average (what sampling uses by default)
    optimizer.safetensors  optimizer tensors; param groups and scalars in its metadata
    state.json           {"step": N, "data": {...}}: the step (every random draw derives from it)
                         and the data position (epoch and batch within it, for streamed shards)
    manifest.json        sha256 and size of each file above, published last

A checkpoint is complete when its manifest is there, is well-formed ({"step": int, "files":
{name: {"sha256": str, "bytes": int}}}), and every file it lists has the listed size; anything
else (a write interrupted at any point, a hand-edited manifest) is never loaded or resumed from,
and a malformed manifest is named. A file whose hash does not match its manifest entry is
reported by name. On a local disk, nothing is read through a symlink that leaves the folder (a
checkpoint folder linked elsewhere, a spec.json linked to a system file): it is named, its
content never shown. No pickle is ever loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import re
from pathlib import Path
from typing import Any

import fsspec
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from zoo.errors import CheckpointError
from zoo.tensorfile import header_metadata
from zoo.urls import with_protocol

MANIFEST = "manifest.json"
FILES = ("spec.json", "model.safetensors", "ema.safetensors", "optimizer.safetensors", "state.json")
#: written only by runs whose objective owns state (the consistency objectives' target network theta^-)
OBJECTIVE = "objective.safetensors"
#: written only by LoRA runs: their (EMA) adapter as diffusers' load_lora_weights reads it (zoo/lora_file.py)
LORA = "pytorch_lora_weights.safetensors"
OPTIONAL = (OBJECTIVE, LORA)
_STEP_DIR = re.compile(r"(?:step_|checkpoint_)(\d+)$")
log = logging.getLogger(__name__)


class _Entry(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class _Manifest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    step: int = Field(ge=0)
    files: dict[str, _Entry]


def parse_manifest(blob: bytes) -> _Manifest:
    """The manifest, or ValueError saying what is malformed (field by field): an entry without
    ``bytes``, an int for an entry, ``files`` as a list, a missing or non-integer ``step``, a
    file name that is not one of the checkpoint's own files."""
    try:
        m = _Manifest.model_validate_json(blob)
    except ValidationError as e:
        shown = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'manifest'}: {err['msg']}" for err in e.errors()[:5])
        raise ValueError(f"malformed manifest ({shown})") from None
    strange = sorted(set(m.files) - set(FILES) - set(OPTIONAL))
    if strange:
        raise ValueError(f"malformed manifest (files: names {strange} are not checkpoint files {list(FILES + OPTIONAL)})")
    return m


def step_dir(step: int) -> str:
    return f"step_{step:08d}"


# -- writing --------------------------------------------------------------------------------------
def write(
    folder: str | Path,
    run_json: str,
    model: dict[str, Tensor],
    ema: dict[str, Tensor],
    optimizer: dict[str, Any],
    step: int,
    state: dict[str, Any] | None = None,
    objective: dict[str, Tensor] | None = None,
    adapter: bytes | None = None,
) -> Path:
    """Write a complete checkpoint into a local folder (manifest last); ``state`` adds to
    state.json (e.g. the data position); ``objective`` is the objective's own state (e.g. the
    EMA target of consistency distillation), written as objective.safetensors when not empty;
    ``adapter`` the bytes of a LoRA run's pytorch_lora_weights.safetensors."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    blobs = {
        "spec.json": run_json.encode(),
        "model.safetensors": st_save(_contiguous(model)),
        "ema.safetensors": st_save(_contiguous(ema)),
        "optimizer.safetensors": _optimizer_blob(optimizer),
        "state.json": json.dumps({**(state or {}), "step": step}).encode(),
    }
    if objective:
        blobs[OBJECTIVE] = st_save(_contiguous(objective))
    if adapter is not None:
        blobs[LORA] = adapter
    for name, blob in blobs.items():
        (folder / name).write_bytes(blob)
    manifest = {"step": step, "files": {n: {"sha256": _sha(b), "bytes": len(b)} for n, b in blobs.items()}}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return folder


def upload(local: str | Path, dest: str) -> str:
    """Copy a local checkpoint folder to any fsspec URL, manifest last and published by a rename
    (an atomic object on S3), so that a copy interrupted at any point is never taken for a
    checkpoint."""
    fs, root = fsspec.core.url_to_fs(dest)
    fs.makedirs(root, exist_ok=True)
    for name in FILES + tuple(n for n in OPTIONAL if (Path(local) / n).exists()):
        fs.put_file(str(Path(local) / name), posixpath.join(root, name))
    staged = posixpath.join(root, MANIFEST + ".partial")
    fs.put_file(str(Path(local) / MANIFEST), staged)
    fs.mv(staged, posixpath.join(root, MANIFEST))
    return dest


def problems(url: str) -> list[str]:
    """What keeps the folder at ``url`` from being a complete checkpoint: a missing or unreadable
    manifest, or files it lists that are missing or have another size. Empty when complete."""
    fs, root = _fs(url), _strip(url)
    fs.invalidate_cache(root)  # another process (a Ray worker) may have written it since
    try:
        with fs.open(posixpath.join(root, MANIFEST), "rb") as f:
            files = parse_manifest(f.read()).files
        sizes = {posixpath.basename(e["name"].rstrip("/")): e.get("size") for e in fs.ls(root, detail=True)}
    except FileNotFoundError:
        return [f"{MANIFEST} is missing"]
    except ValueError as e:
        return [f"{posixpath.join(root, MANIFEST)}: {e}"]
    out = []
    for name, entry in files.items():
        if name not in sizes:
            out.append(f"{name} is missing")
        elif sizes[name] != entry.bytes:
            out.append(f"{name} has {sizes[name]} bytes, the manifest says {entry.bytes}")
        elif _escapes(url, posixpath.join(root, name), root):
            out.append(_escapes(url, posixpath.join(root, name), root))
    return out


def is_complete(url: str) -> bool:
    """The manifest is there and parses, and every file it lists has the listed size."""
    return not problems(url)


def prune(root: str, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` complete checkpoints under ``root``; incomplete ones
    older than the newest complete one go too."""
    found = _candidates(root)
    complete = [(s, p) for s, p in found if is_complete(with_protocol(root, p))]
    if not complete:
        return []
    keep_paths = {p for _, p in sorted(complete)[-keep:]}
    newest = max(s for s, _ in complete)
    doomed = [p for s, p in found if p not in keep_paths and s <= newest]
    fs = _fs(root)
    for p in doomed:
        fs.rm(p, recursive=True)
    return doomed


# -- reading --------------------------------------------------------------------------------------
def latest(url: str) -> str | None:
    """The newest complete checkpoint at ``url``: the URL itself if it is one, else the newest
    under url/checkpoints/ or among url's own step_* / checkpoint_* folders (Ray Train's)."""
    fs = _fs(url)
    root = _strip(url)
    fs.invalidate_cache(root)  # a listing cached before another process wrote it (s3fs) would hide it
    if fs.exists(posixpath.join(root, MANIFEST)):
        return url if is_complete(url) else None
    for base in (posixpath.join(root, "checkpoints"), root):
        for _, p in sorted(_candidates(with_protocol(url, base)), reverse=True):
            found = problems(with_protocol(url, p))
            if not found:
                return with_protocol(url, p)
            if any("malformed" in f or "symlink" in f for f in found):  # not an interrupted write: say so
                log.warning("skipping checkpoint %s as incomplete: %s", with_protocol(url, p), "; ".join(found))
    return None


def resolve(url: str) -> str:
    """``latest(url)`` or a CheckpointError that says what was found instead."""
    fs = _fs(url)
    fs.invalidate_cache(_strip(url))  # see latest
    if not fs.exists(_strip(url)):
        raise CheckpointError(f"no checkpoint at {url!r}: the path does not exist")
    found = latest(url)
    if found is None and fs.exists(posixpath.join(_strip(url), MANIFEST)):
        raise CheckpointError(f"{url}: incomplete checkpoint: {'; '.join(problems(url))}")
    if found is None:
        raise CheckpointError(
            f"no complete checkpoint at {url!r} (a checkpoint is a folder with {MANIFEST}; "
            "folders without it were interrupted while being written)"
        )
    return found


class Checkpoint:
    """A verified, complete checkpoint folder."""

    def __init__(self, url: str):
        self.url = url
        self.fs = _fs(url)
        self.root = _strip(url)
        mpath = posixpath.join(self.root, MANIFEST)
        escape = _escapes(url, mpath, self.root)
        if escape:
            raise CheckpointError(escape)
        try:
            with self.fs.open(mpath, "rb") as f:
                manifest = parse_manifest(f.read())
        except FileNotFoundError:
            raise CheckpointError(f"{url}: {MANIFEST} is missing; the checkpoint is incomplete") from None
        except ValueError as e:
            raise CheckpointError(f"{mpath}: {e}") from None
        self.manifest = manifest.model_dump()
        self.files = self.manifest["files"]
        self.step = manifest.step

    def read(self, name: str) -> bytes:
        if name not in self.files:
            raise CheckpointError(f"{self.url}: {name} is not listed in {MANIFEST}")
        path = posixpath.join(self.root, name)
        escape = _escapes(self.url, path, self.root)
        if escape:
            raise CheckpointError(escape)
        try:
            with self.fs.open(path, "rb") as f:
                blob = f.read()
        except FileNotFoundError:
            raise CheckpointError(f"{path}: file is missing") from None
        want = self.files[name]
        if len(blob) != want["bytes"] or _sha(blob) != want["sha256"]:
            raise CheckpointError(
                f"{path}: corrupt ({len(blob)} bytes, sha256 {_sha(blob)[:12]}; "
                f"the manifest says {want['bytes']} bytes, sha256 {want['sha256'][:12]})"
            )
        return blob

    def spec_json(self) -> str:
        return self._text("spec.json")

    def state(self) -> dict[str, Any]:
        """state.json: the step and the data position."""
        try:
            state = json.loads(self._text("state.json"))
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{posixpath.join(self.root, 'state.json')}: not JSON ({e.msg} at line {e.lineno})") from None
        if not isinstance(state, dict):
            raise CheckpointError(f"{posixpath.join(self.root, 'state.json')}: not a JSON object")
        return state

    def _text(self, name: str) -> str:
        try:
            return self.read(name).decode("utf-8")
        except UnicodeDecodeError as e:
            raise CheckpointError(f"{posixpath.join(self.root, name)}: not UTF-8 text (byte {e.start})") from None

    def tensors(self, name: str) -> dict[str, Tensor]:
        blob = self.read(name)
        try:
            return dict(sorted(st_load(blob).items()))  # one order in every process
        except SafetensorError as e:
            raise CheckpointError(f"{posixpath.join(self.root, name)}: not a valid safetensors file ({e})") from None

    def optimizer_state(self) -> dict[str, Any]:
        return _optimizer_from_blob(self.read("optimizer.safetensors"), posixpath.join(self.root, "optimizer.safetensors"))


# -- helpers --------------------------------------------------------------------------------------
def _fs(url: str) -> fsspec.AbstractFileSystem:
    return fsspec.core.url_to_fs(url)[0]


def _strip(url: str) -> str:
    return fsspec.core.url_to_fs(url)[1]


def _escapes(url: str, path: str, inside: str | None = None) -> str | None:
    """On a local disk: why ``path`` leaves its folder through a symlink (its real path outside
    ``inside``, or for a step folder found in a run folder, outside that folder), else None. The
    target is named, never read."""
    if "://" in url and not url.startswith("file://"):
        return None
    if not os.path.lexists(path):
        return None
    folder = os.path.realpath(inside if inside is not None else os.path.dirname(os.path.normpath(path)))
    real = os.path.realpath(path)
    if real != folder and not real.startswith(folder.rstrip(os.sep) + os.sep):
        what = "checkpoint folder" if inside is None else "file"
        return f"{path}: {what} is a symlink out of {folder} (to {real}); refused"
    return None


def _candidates(root: str) -> list[tuple[int, str]]:
    fs = _fs(root)
    base = _strip(root)
    fs.invalidate_cache(base)
    if not fs.isdir(base):
        return []
    out = []
    for entry in fs.ls(base, detail=False):
        m = _STEP_DIR.search(entry.rstrip("/"))
        if m and fs.isdir(entry):
            escape = _escapes(root, entry)
            if escape:
                log.warning("skipping checkpoint %s", escape)
                continue
            out.append((int(m.group(1)), entry))
    return out


def _sha(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def _contiguous(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in sd.items()}


def _optimizer_blob(sd: dict[str, Any]) -> bytes:
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for k, v in state.items():
            if isinstance(v, Tensor):
                tensors[f"state.{pid}.{k}"] = v.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(pid), {})[k] = v
    meta = {"param_groups": json.dumps(sd["param_groups"]), "scalars": json.dumps(scalars)}
    return st_save(tensors, metadata=meta)


def _optimizer_from_blob(blob: bytes, where: str) -> dict[str, Any]:
    try:
        tensors = st_load(blob)
        meta = header_metadata(blob)
        groups = json.loads(meta["param_groups"])
        scalars = json.loads(meta["scalars"])
    except (SafetensorError, KeyError, ValueError) as e:
        raise CheckpointError(f"{where}: unreadable optimizer state ({e})") from None
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = v
    for pid, extra in scalars.items():
        state.setdefault(int(pid), {}).update(extra)
    # one order in every process (safetensors does not keep one): collectives iterate it under FSDP
    return {"state": {pid: dict(sorted(state[pid].items())) for pid in sorted(state)}, "param_groups": groups}
