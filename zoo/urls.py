"""The one helper for fsspec protocols: a path as a filesystem lists it, back as a URL."""

from __future__ import annotations


def with_protocol(template: str, path: str) -> str:
    """``path`` (as an fsspec filesystem lists it, protocol stripped) as a URL with ``template``'s
    protocol: ("s3://b/runs", "b/runs/x") -> "s3://b/runs/x"; a local template leaves it a path."""
    return template.split("://", 1)[0] + "://" + path if "://" in template else path
