"""Crafted files: malformed manifests, shard names and symlinks that leave their folder, a
spec.json that is not UTF-8. Each is an error naming the file (never a raw KeyError /
TypeError / UnicodeDecodeError), and nothing outside the folder is read or shown."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch

import zoo
from serve.options import ModelOptions
from serve.source import resolve as serve_resolve
from tests.conftest import tiny_overrides
from zoo import checkpoint as ckpt
from zoo.errors import CheckpointError, DataError
from zoo.model import Model


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory) -> Path:
    """A real, complete checkpoint of a tiny untrained ddpm-digits in run/checkpoints/step_00000002."""
    run = zoo.get("ddpm-digits", **tiny_overrides())
    torch.manual_seed(0)
    sd = Model(run.model, run.name).trainable_state_dict()
    root = tmp_path_factory.mktemp("run")
    ckpt.write(root / "checkpoints" / ckpt.step_dir(2), run.model_dump_json(), sd, sd, {"state": {}, "param_groups": []}, 2)
    return root


def copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst, symlinks=True)
    return dst


def manifest_of(run: Path) -> Path:
    return run / "checkpoints" / ckpt.step_dir(2) / ckpt.MANIFEST


BAD_MANIFESTS = {
    "entry without bytes": lambda m: m["files"]["spec.json"].pop("bytes"),
    "entry is an int": lambda m: m["files"].__setitem__("spec.json", 5),
    "files is a list": lambda m: m.__setitem__("files", list(m["files"])),
    "step missing": lambda m: m.pop("step"),
    "step not numeric": lambda m: m.__setitem__("step", "two"),
    "name outside the folder": lambda m: m["files"].__setitem__("../../etc/passwd", m["files"]["spec.json"]),
}


@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_malformed_manifest_is_named_by_load_serve_and_latest(good_checkpoint, tmp_path, case, caplog):
    run = copy_run(good_checkpoint, tmp_path / "run")
    path = manifest_of(run)
    m = json.loads(path.read_text())
    BAD_MANIFESTS[case](m)
    path.write_text(json.dumps(m))
    with pytest.raises(CheckpointError, match="malformed manifest") as e:
        zoo.load(str(path.parent))
    assert str(path) in str(e.value)
    with pytest.raises(CheckpointError, match="malformed manifest"):
        serve_resolve(ModelOptions(model=str(path.parent)))
    # a run folder: latest() skips it as incomplete and names it
    with caplog.at_level(logging.WARNING, logger="zoo.checkpoint"):
        assert ckpt.latest(str(run)) is None
    assert str(path.parent) in caplog.text and "malformed manifest" in caplog.text
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        zoo.load(str(run))


def test_the_good_checkpoint_loads(good_checkpoint):
    assert ckpt.latest(str(good_checkpoint)).endswith(ckpt.step_dir(2))
    assert zoo.load(str(good_checkpoint)).spec == zoo.get("ddpm-digits", **tiny_overrides()).model


def test_step_folder_symlinked_out_of_the_run_is_refused(good_checkpoint, tmp_path, caplog):
    elsewhere = copy_run(good_checkpoint, tmp_path / "elsewhere")
    run = copy_run(good_checkpoint, tmp_path / "run")
    os.symlink(elsewhere / "checkpoints" / ckpt.step_dir(2), run / "checkpoints" / "step_99999999")
    with caplog.at_level(logging.WARNING, logger="zoo.checkpoint"):
        found = ckpt.latest(str(run))
    assert found.endswith(ckpt.step_dir(2)) and "step_99999999" in caplog.text and "symlink" in caplog.text


def test_spec_json_symlinked_to_a_system_file_is_refused_without_its_content(good_checkpoint, tmp_path):
    run = copy_run(good_checkpoint, tmp_path / "run")
    folder = manifest_of(run).parent
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-LINE\n")
    (folder / "spec.json").unlink()
    os.symlink(secret, folder / "spec.json")
    blob = secret.read_bytes()  # a manifest crafted to match the target: sizes and hashes pass
    m = json.loads(manifest_of(run).read_text())
    m["files"]["spec.json"] = {"sha256": ckpt._sha(blob), "bytes": len(blob)}
    manifest_of(run).write_text(json.dumps(m))
    for call in (lambda: zoo.load(str(folder)), lambda: serve_resolve(ModelOptions(model=str(folder)))):
        with pytest.raises(CheckpointError, match="symlink out of") as e:
            call()
        assert "TOP-SECRET" not in str(e.value) and "spec.json" in str(e.value)


def test_spec_json_that_is_not_utf8_is_named(good_checkpoint, tmp_path):
    run = copy_run(good_checkpoint, tmp_path / "run")
    folder = manifest_of(run).parent
    blob = b"\xff\xfe{not utf-8"
    (folder / "spec.json").write_bytes(blob)
    m = json.loads(manifest_of(run).read_text())
    m["files"]["spec.json"] = {"sha256": ckpt._sha(blob), "bytes": len(blob)}
    manifest_of(run).write_text(json.dumps(m))
    for call in (lambda: zoo.load(str(folder)), lambda: serve_resolve(ModelOptions(model=str(folder)))):
        with pytest.raises(CheckpointError, match="spec.json: not UTF-8"):
            call()


@pytest.mark.parametrize("name", ["../outside/secret.parquet", "/etc/passwd", "a/../../b.parquet", "s3://bucket/x.parquet", ""])
def test_shard_names_stay_inside_the_shard_set(tmp_path, name):
    from jobs.shards import INDEX, read_index

    index = {"columns": ["key", "image"], "image_size": 16, "channels": 1, "rows": 1,
             "shards": [{"name": name, "rows": 1, "bytes": 10}]}
    (tmp_path / INDEX).write_text(json.dumps(index))
    with pytest.raises(DataError, match="shard name") as e:
        read_index(str(tmp_path))
    assert str(tmp_path / INDEX) in str(e.value)
    index["shards"][0]["name"] = "shard-00000.parquet"
    (tmp_path / INDEX).write_text(json.dumps(index))
    assert read_index(str(tmp_path)).shards[0].name == "shard-00000.parquet"
