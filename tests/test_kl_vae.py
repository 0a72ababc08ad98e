"""The kl_vae autoencoder: diffusers' AutoencoderKL behind the autoencoder contract, its
diffusers layout from local paths and fsspec URLs, and the latent shape driving the spec checks."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

from components.autoencoders import KlVaeSpec  # noqa: E402
from components.hf_folder import LayoutError  # noqa: E402

TINY = dict(channels=1, latent_channels=2, block_out_channels=(8, 8), layers_per_block=1, norm_num_groups=4,
            scaling_factor=0.5)


def test_encode_decode_is_diffusers_with_the_scaling_factor(one_thread):
    vae = KlVaeSpec(**TINY).build().eval()
    x = torch.rand(2, 1, 8, 8) * 2 - 1
    with torch.no_grad():
        z = vae.encode(x)
        dist = vae.vae.encode(x).latent_dist
        assert z.shape == (2, 2, 4, 4)
        torch.testing.assert_close(z, dist.mean * 0.5, rtol=0, atol=0)
        torch.testing.assert_close(vae.decode(z), vae.vae.decode(dist.mean).sample, rtol=0, atol=0)
    # a posterior sample differs from the mean by std * noise, exactly
    sampler = KlVaeSpec(**TINY, posterior="sample").build().eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        zs = sampler.encode(x, g)
        d = sampler.vae.encode(x).latent_dist
    noise = torch.randn(d.mean.shape, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(zs, (d.mean + d.std * noise) * 0.5)


def test_init_is_reproducible_and_loss_trains(one_thread):
    a, b = KlVaeSpec(**TINY).build(), KlVaeSpec(**TINY).build()
    for (k, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), k
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    loss, parts = a.loss(x, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and parts["kl"] > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in a.parameters() if p.requires_grad)


@pytest.mark.parametrize("scheme", ["local", "memory"])
def test_diffusers_layout_round_trips(tmp_path, scheme, one_thread):
    vae = KlVaeSpec(**TINY, init_seed=5).build()
    url = str(tmp_path / "vae") if scheme == "local" else "memory://zoo-test/vae"
    vae.save(url)
    again = KlVaeSpec(**TINY, weights=url).build()
    for (k, p), q in zip(vae.state_dict().items(), again.state_dict().values()):
        assert torch.equal(p, q), k
    # the folder is diffusers' own layout: its class loads it
    if scheme == "local":
        from diffusers import AutoencoderKL

        theirs = AutoencoderKL.from_pretrained(url)
        assert torch.equal(theirs.state_dict()["encoder.conv_in.weight"], vae.state_dict()["vae.encoder.conv_in.weight"])


def test_bad_folders_name_the_file_and_field(tmp_path, one_thread):
    url = str(tmp_path / "vae")
    KlVaeSpec(**TINY).build().save(url)
    with pytest.raises(LayoutError, match=r"config.json: latent_channels=2 but the spec's autoencoder gives 4"):
        KlVaeSpec(**{**TINY, "latent_channels": 4}, weights=url).build()
    (tmp_path / "vae" / "diffusion_pytorch_model.safetensors").rename(tmp_path / "vae" / "diffusion_pytorch_model.bin")
    with pytest.raises(LayoutError, match=r"pickle weights.*safe_serialization=True"):
        KlVaeSpec(**TINY, weights=url).build()
    with pytest.raises(LayoutError, match="missing or empty"):
        KlVaeSpec(**TINY, weights=str(tmp_path / "nowhere")).build()


def test_latent_shape_drives_the_model_spec_checks(one_thread):
    import zoo

    base = zoo.get("ddpm-digits").model.model_dump(mode="json")
    size = base["image"]["size"]
    base["autoencoder"] = {"kind": "kl_vae", **TINY, "block_out_channels": [8, 8]}
    base["backbone"].update(in_channels=2, out_channels=2, resolution=size // 2)
    from zoo.specs import ModelSpec

    ModelSpec.model_validate(base)
    base["backbone"]["resolution"] = size
    with pytest.raises(ValueError, match=f"backbone.resolution={size} but the autoencoder gives {size // 2}x{size // 2}"):
        ModelSpec.model_validate(base)


def test_data_encode_writes_kl_vae_latents(tmp_path, one_thread):
    """`zoo data encode` (zoo.data.encode) serves the KL-VAE: the latent shards hold exactly
    model.encode of each image (the posterior mean times scaling_factor)."""
    import numpy as np
    import pyarrow.parquet as pq

    import zoo
    from jobs.shards import decode_png, read_index
    from jobs.encode import encode
    from jobs.pack import pack

    overrides = {"autoencoder": {"kind": "kl_vae", **TINY, "block_out_channels": [8, 8]},
                 "backbone.in_channels": 2, "backbone.out_channels": 2, "backbone.resolution": 8,
                 "backbone.channels": 8, "backbone.channel_mult": [1, 2], "backbone.attention_resolutions": [4],
                 "backbone.groups": 4}
    model = zoo.build("ddpm-digits", **overrides).eval()
    src = pack("builtin:digits", str(tmp_path / "px"), split="heldout", progress=False)
    out = encode(str(tmp_path / "px"), str(tmp_path / "lat"), model, dtype="float32", progress=False)
    assert out.latent_shape == [2, 8, 8] and out.rows == src.rows
    index = read_index(str(tmp_path / "px"))
    px = {r["key"]: r["image"] for r in pq.read_table(tmp_path / "px" / index.shards[0].name).to_pylist()}
    lat = pq.read_table(tmp_path / "lat" / out.shards[0].name).to_pylist()[:8]
    images = torch.from_numpy(np.stack([decode_png(px[r["key"]], 16, 1) for r in lat])).float().div(127.5).sub(1)
    with torch.no_grad():
        want = model.encode(images)
    got = torch.from_numpy(np.stack([np.frombuffer(r["latent"], "<f4").reshape(2, 8, 8) for r in lat]))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_train_autoencoder_fits_by_the_spec_recipe(tmp_path, one_thread):
    """`zoo train-autoencoder` (jobs/autoencoder.py): the entry's autoencoder.train recipe fits the KL-VAE
    into a diffusers folder named by the autoencoder spec's hash; the same spec reuses it, the same
    recipe fits the same weights, and a model without a recipe is an error naming the field."""
    import zoo
    from jobs.autoencoder import train_autoencoder
    from zoo.errors import SpecError

    short = {"autoencoder.train.steps": 3, "autoencoder.train.batch_size": 8}
    url = train_autoencoder("ldm-tiny", output=str(tmp_path / "a"), progress=False, **short)
    assert url.startswith(str(tmp_path / "a" / "ldm-tiny-vae-"))
    assert train_autoencoder("ldm-tiny", output=str(tmp_path / "a"), progress=False, **short) == url  # reused
    again = train_autoencoder("ldm-tiny", output=str(tmp_path / "b"), progress=False, **short)
    spec = zoo.get("ldm-tiny", **short).model.autoencoder
    fitted, repeat = (spec.model_copy(update={"weights": u}).build() for u in (url, again))
    init = spec.build()
    for (k, p), q, r in zip(fitted.state_dict().items(), repeat.state_dict().values(), init.state_dict().values()):
        assert torch.equal(p, q), k
    assert any(not torch.equal(p, r) for p, r in zip(fitted.state_dict().values(), init.state_dict().values()))
    with pytest.raises(SpecError, match="autoencoder.train is not set"):
        train_autoencoder("ddpm-digits", output=str(tmp_path / "c"), progress=False)
