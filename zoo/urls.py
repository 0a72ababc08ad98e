"""The fsspec helpers of the core: a path as a filesystem lists it, back as a URL, and a file
written whole."""

from __future__ import annotations

import os
import posixpath

import fsspec


def with_protocol(template: str, path: str) -> str:
    """``path`` (as an fsspec filesystem lists it, protocol stripped) as a URL with ``template``'s
    protocol: ("s3://b/runs", "b/runs/x") -> "s3://b/runs/x"; a local template leaves it a path."""
    return template.split("://", 1)[0] + "://" + path if "://" in template else path


def write_whole(url: str, data: bytes) -> str:
    """Write ``data`` to ``url`` so that a reader never sees half of it: a temporary file renamed
    over the target on a local disk (another process may be reading it), one PUT on an object store."""
    fs, path = fsspec.core.url_to_fs(url)
    fs.makedirs(posixpath.dirname(path) or ".", exist_ok=True)
    local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
    target = f"{path}.tmp{os.getpid()}" if local else path
    with fs.open(target, "wb") as f:
        f.write(data)
    if local:
        os.replace(target, path)
    return url
