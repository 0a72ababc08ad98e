"""fsspec URLs (local paths, s3://, gs://, memory://, ...) as the pyarrow filesystems Ray Train's
RunConfig(storage_filesystem) and Ray Data's readers take, and small URL helpers."""

from __future__ import annotations

import posixpath

import fsspec
import pyarrow.fs

from zoo.urls import with_protocol  # noqa: F401  (jobs.storage.with_protocol: the core's one helper)


def is_local(url: str) -> bool:
    fs = fsspec.core.url_to_fs(url)[0]
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def pyarrow_fs(url: str) -> tuple[pyarrow.fs.FileSystem, str]:
    """(pyarrow filesystem, path on it) for any fsspec URL: pyarrow's own for local paths,
    the fsspec filesystem (s3fs, gcsfs, ...) wrapped in pyarrow's FSSpecHandler otherwise."""
    fs, path = fsspec.core.url_to_fs(url)
    if is_local(url):
        return pyarrow.fs.LocalFileSystem(), path
    return pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs)), path


def join(url: str, *parts: str) -> str:
    return posixpath.join(url.rstrip("/"), *parts)
