"""LoRA adapter files in the layout diffusers reads: ``pytorch_lora_weights.safetensors``.

Keys are peft's (``<prefix>.<layer>.lora_A.weight`` / ``lora_B.weight``, rank r rows / columns)
with the prefix diffusers' ``StableDiffusionPipeline.load_lora_weights`` routes by ("unet" for
sd_unet, diffusers' layer names; "backbone" for the package's own backbones), which is what
diffusers' ``save_lora_weights(unet_lora_layers=get_peft_model_state_dict(unet))`` writes. The
safetensors header carries the peft LoraConfig as JSON under ``lora_adapter_metadata``, its keys
prefixed the same way (``unet.r``, ``unet.lora_alpha``, ``unet.target_modules``, ...), as
diffusers' training scripts write it: without it diffusers would take alpha = r.

Reading accepts what diffusers' loader accepts for a UNet (peft keys, diffusers' older
``lora.down`` / ``lora.up`` keys, kohya's ``lora_unet_*`` keys with ``.alpha``), from a local
path or any fsspec URL, a file or a folder holding ``pytorch_lora_weights.safetensors``. Only
safetensors: a pickle (``.bin``, ``.pt``, ``.ckpt``) is refused without being opened.

    write(model, "out/")                     # out/pytorch_lora_weights.safetensors
    load(model, "s3://b/lcm-lora/", merge=True)
"""

from __future__ import annotations

import json
import posixpath
import struct
from typing import Any

import fsspec
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from zoo.errors import CheckpointError
from zoo.lora import ADAPTER, attach, host_of, is_adapter_key, merge_adapter
from zoo.tensorfile import header_metadata, read_blob

WEIGHT_NAME = "pytorch_lora_weights.safetensors"
METADATA_KEY = "lora_adapter_metadata"  # diffusers' LORA_ADAPTER_METADATA_KEY
_PICKLES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def config_metadata(config: Any, prefix: str) -> dict[str, Any]:
    """A peft LoraConfig as JSON-ready metadata with prefixed keys (diffusers' _pack_dict_with_prefix)."""
    body = {}
    for key, value in config.to_dict().items():
        body[f"{prefix}.{key}"] = sorted(value) if isinstance(value, set) else value
    return body


def file_tensors(model: Any, state: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """The adapter of ``model`` (or ``state``, keyed as the denoiser's state_dict, e.g. its EMA)
    keyed as the file stores it: ``<prefix>.<layer>.lora_A.weight``."""
    adapter = model.adapter
    state = {k: v for k, v in (state if state is not None else model.denoiser.state_dict()).items() if is_adapter_key(k)}
    head = adapter.module + "."
    out = {}
    for key, value in state.items():
        if not key.startswith(head):
            raise ValueError(f"adapter tensor {key} is not under {adapter.module}")
        out[f"{adapter.prefix}.{key[len(head):].replace(f'.{ADAPTER}.', '.')}"] = value.detach().cpu().contiguous()
    return out


def encode(model: Any, state: dict[str, Tensor] | None = None) -> bytes:
    """The bytes of ``pytorch_lora_weights.safetensors`` for ``model``'s unmerged adapter."""
    if getattr(model, "adapter", None) is None:
        raise ValueError(f"{model.name} carries no unmerged adapter to write")
    meta = {"format": "pt", METADATA_KEY: json.dumps(config_metadata(model.adapter.config, model.adapter.prefix),
                                                      indent=2, sort_keys=True)}
    return st_save(file_tensors(model, state), metadata=meta)


def write(model: Any, folder: str, state: dict[str, Tensor] | None = None) -> str:
    """Write ``<folder>/pytorch_lora_weights.safetensors`` (any fsspec URL); returns its URL."""
    url = posixpath.join(folder.rstrip("/"), WEIGHT_NAME) if "://" in folder else f"{folder.rstrip('/')}/{WEIGHT_NAME}"
    fs, path = fsspec.core.url_to_fs(url)
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    with fs.open(path, "wb") as f:
        f.write(encode(model, state))
    return url


def file_url(url: str) -> str:
    """The adapter file a URL names: the file itself, or ``pytorch_lora_weights.safetensors`` in a
    folder. Pickles are refused by name."""
    if url.endswith(_PICKLES):
        raise CheckpointError(f"lora={url}: pickle files are never loaded; convert it to safetensors "
                              "(diffusers: save_lora_weights(..., safe_serialization=True))")
    if url.endswith(".safetensors"):
        return url
    fs, path = fsspec.core.url_to_fs(url)
    if fs.isdir(path):
        inside = posixpath.join(url.rstrip("/"), WEIGHT_NAME)
        if not fs.exists(posixpath.join(path, WEIGHT_NAME)):
            raise CheckpointError(f"lora={url}: the folder holds no {WEIGHT_NAME}")
        return inside
    raise CheckpointError(f"lora={url}: not a .safetensors file or a folder holding {WEIGHT_NAME}")


def read(url: str) -> tuple[dict[str, Tensor], dict[str, Any] | None]:
    """(tensors, adapter metadata or None) of an adapter file; errors name the file."""
    url = file_url(url)
    blob = read_blob(url, CheckpointError, f"lora={url}")
    try:
        tensors = st_load(blob)
        header = header_metadata(blob)
    except (SafetensorError, struct.error, ValueError) as e:
        raise CheckpointError(f"lora={url}: not a valid safetensors file ({e})") from None
    meta = header.get(METADATA_KEY)
    try:
        return tensors, (json.loads(meta) if meta else None)
    except json.JSONDecodeError:
        raise CheckpointError(f"lora={url}: {METADATA_KEY} in the header is not JSON") from None


def load(model: Any, url: str, merge: bool = False) -> Any:
    """Put the adapter of ``url`` on ``model``'s backbone; ``merge=True`` folds it into the base
    weights (a plain model, as fast as the base), else it stays a separate adapter (what
    diffusers' load_lora_weights does; export_diffusers then writes it beside the folder)."""
    tensors, meta = read(url)
    where = file_url(url)
    _, prefix, _ = host_of(model.denoiser.backbone)
    if prefix == "unet":
        _load_into_unet(model, tensors, meta, where)
    else:
        _load_generic(model, tensors, meta, prefix, where)
    if merge:
        merge_adapter(model)
    return model


def _load_into_unet(model: Any, tensors: dict[str, Tensor], meta: dict | None, where: str) -> None:
    """diffusers' own path: StableDiffusionLoraLoaderMixin.lora_state_dict (kohya -> diffusers
    keys, network alphas) then UNet2DConditionModel.load_lora_adapter, prefix "unet"."""
    from diffusers.loaders.lora_pipeline import StableDiffusionLoraLoaderMixin
    from diffusers.utils.state_dict_utils import convert_unet_state_dict_to_peft

    state, alphas = StableDiffusionLoraLoaderMixin.lora_state_dict(dict(tensors))
    others = sorted({k.split(".", 1)[0] for k in state if not k.startswith("unet.")})
    if others:
        raise CheckpointError(f"lora={where}: holds adapters for {others}; only the UNet's ('unet.' keys) are loaded "
                              "here (a text-encoder adapter is not supported)")
    # diffusers' older lora.down / lora.up keys to peft's lora_A / lora_B for every layer (diffusers'
    # loader converts only when the first key is old-style; files mixing both exist)
    state = convert_unet_state_dict_to_peft(state)
    unet = model.denoiser.backbone.unet
    if meta is not None and alphas:
        raise CheckpointError(f"lora={where}: has both {METADATA_KEY} and kohya .alpha tensors")
    meta = {k: v for k, v in (meta or {}).items() if k.startswith("unet.")} or None
    before = set(unet.state_dict())
    unet.load_lora_adapter(state, prefix="unet", network_alphas=alphas, metadata=meta, adapter_name=ADAPTER)
    loaded = {k for k in set(unet.state_dict()) - before if is_adapter_key(k)}
    if len(loaded) != len(state):
        raise CheckpointError(f"lora={where}: {len(state)} adapter tensors but {len(loaded)} fit layers of "
                              f"{model.name}'s UNet: the adapter was made for another architecture")
    config = unet.peft_config[ADAPTER]
    from zoo.lora import Adapter

    model.adapter = Adapter(config, "unet", "backbone.unet")


def _load_generic(model: Any, tensors: dict[str, Tensor], meta: dict | None, prefix: str, where: str) -> None:
    from peft import LoraConfig
    from peft.utils import set_peft_model_state_dict

    head = prefix + "."
    if meta is None or not any(k.startswith(head) for k in meta):
        raise CheckpointError(f"lora={where}: no {METADATA_KEY} for '{prefix}' in the header (rank, alpha and targets "
                              "of an adapter on this package's backbones are read from it)")
    strange = sorted(k for k in tensors if not k.startswith(head))[:3]
    if strange:
        raise CheckpointError(f"lora={where}: keys {strange} are not under '{head}' ({model.name}'s backbone)")
    config = LoraConfig(**{k[len(head):]: v for k, v in meta.items() if k.startswith(head)})
    attach(model, config)
    host = model.adapter.host(model.denoiser)
    state = {k[len(head):]: v for k, v in tensors.items()}
    try:
        result = set_peft_model_state_dict(host, state, adapter_name=ADAPTER)
    except RuntimeError as e:  # shapes that do not fit
        raise CheckpointError(f"lora={where}: does not fit {model.name}'s backbone: {' '.join(str(e).split())[:300]}") from None
    missing = [k for k in result.missing_keys if is_adapter_key(k)]
    if result.unexpected_keys or missing:
        raise CheckpointError(f"lora={where}: does not fit {model.name}'s backbone (unexpected "
                              f"{sorted(result.unexpected_keys)[:3]}, missing {missing[:3]})")


__all__ = ["METADATA_KEY", "WEIGHT_NAME", "config_metadata", "encode", "file_tensors", "file_url", "load", "read",
           "write"]
