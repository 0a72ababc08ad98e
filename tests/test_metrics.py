"""Metrics against closed forms, peers and real data: the Frechet distance of Gaussians with
known distance, FID of real digits against themselves / another half / noise, Inception Score
of known distributions, precision/recall of identical and disjoint sets, the FID Inception-v3
against pytorch-fid's on the same (random) weights, and reference statistics files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg

from zoo.data import digits
from zoo.errors import CheckpointError, DataError, SpecError
from zoo.metrics import detectors, frechet_distance, gaussian_stats, inception_score, precision_recall
from zoo.metrics.reference import ReferenceStats, load_images, reference, stats_url


def _closed_form(mu1, a, mu2, b):
    """Frechet distance of N(mu1, Q diag(a) Q^T) and N(mu2, Q diag(b) Q^T) (commuting covariances)."""
    return float(((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum())


@pytest.mark.parametrize("d", [1, 5, 64])
def test_frechet_matches_closed_form_for_commuting_covariances(d):
    rng = np.random.default_rng(d)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    mu1, mu2, a, b = rng.normal(size=d), rng.normal(size=d), rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    s1, s2 = (q * a) @ q.T, (q * b) @ q.T
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_closed_form(mu1, a, mu2, b), rel=1e-9, abs=1e-9)
    diag = frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert diag == pytest.approx(_closed_form(mu1, a, mu2, b), rel=1e-9, abs=1e-9)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pytorch-fid passes sqrtm's old disp=
def test_frechet_matches_scipy_sqrtm_and_pytorch_fid_on_general_covariances():
    rng = np.random.default_rng(0)
    d = 32
    x, y = rng.normal(size=(200, d)) @ rng.normal(size=(d, d)), rng.normal(size=(300, d)) * rng.uniform(0.5, 2, d) + 1
    (mu1, s1), (mu2, s2) = gaussian_stats(x), gaussian_stats(y)
    covmean = linalg.sqrtm(s1 @ s2).real  # the direct computation of pytorch-fid / clean-fid
    direct = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)
    ours = frechet_distance(mu1, s1, mu2, s2)
    assert ours == pytest.approx(direct, rel=1e-8)
    fid_score = pytest.importorskip("pytorch_fid.fid_score")
    assert ours == pytest.approx(fid_score.calculate_frechet_distance(mu1, s1, mu2, s2), rel=1e-8)


def test_frechet_of_singular_covariances_is_finite_and_symmetric():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(10, 50)), rng.normal(size=(12, 50))  # n < d: rank-deficient
    (mu1, s1), (mu2, s2) = gaussian_stats(x), gaussian_stats(y)
    a, b = frechet_distance(mu1, s1, mu2, s2), frechet_distance(mu2, s2, mu1, s1)
    assert np.isfinite(a) and a > 0 and a == pytest.approx(b, rel=1e-8)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-6 * np.trace(s1))
    with pytest.raises(ValueError, match="shapes differ"):
        frechet_distance(mu1, s1, mu2[:3], s2[:3, :3])


# -- the digits feature-FID on real data --------------------------------------------------------


@pytest.fixture(scope="module")
def digits_features():
    det = detectors.get("digits")
    train, _ = digits.load("train")
    held, _ = digits.load("heldout")
    feats = lambda x: det(detectors.to_uint8((x + 1) / 2))["features"]  # noqa: E731
    return det, feats, feats(train), feats(held)


def _fd(a, b):
    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))


def test_digits_fid_self_zero_halves_small_noise_large(digits_features):
    det, feats, train, held = digits_features
    scale = np.trace(gaussian_stats(train)[1])
    assert abs(_fd(train, train)) < 1e-7 * scale
    half = len(train) // 2
    halves = _fd(train[:half], train[half:])
    g = torch.Generator().manual_seed(0)
    noise = _fd(train, feats(torch.rand(len(train), 1, 16, 16, generator=g) * 2 - 1))
    blobs = _fd(train, feats(torch.randn(len(train), 1, 16, 16, generator=g).clamp(-1, 1) * 0.3 - 0.7))
    held_out = _fd(train, held)
    msg = f"trace {scale:.1f}, halves {halves:.2f}, train vs held-out {held_out:.2f}, vs uniform noise {noise:.1f}, vs blobs {blobs:.1f}"
    print(msg)
    assert halves < 0.02 * noise and halves < 0.02 * blobs, msg
    assert held_out < 0.05 * noise, msg


# -- Inception Score, precision / recall ------------------------------------------------------------


def test_inception_score_closed_forms():
    k = 7
    confident = np.full((70, 10), -50.0)
    confident[np.arange(70), np.arange(70) % k] = 50.0  # one-hot over k classes, uniform marginal
    assert inception_score(confident, splits=1)[0] == pytest.approx(k, rel=1e-6)
    assert inception_score(np.zeros((50, 10)), splits=5) == pytest.approx((1.0, 0.0))
    collapsed = np.tile(confident[:1], (40, 1))  # every sample the same class: no diversity
    assert inception_score(collapsed, splits=4)[0] == pytest.approx(1.0, rel=1e-6)
    with pytest.raises(ValueError):
        inception_score(np.zeros((5, 10)), splits=10)


def test_precision_recall_of_identical_disjoint_and_collapsed_sets():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(300, 8))
    assert precision_recall(real, real) == (1.0, 1.0)
    assert precision_recall(real, real + 100) == (0.0, 0.0)
    collapsed = real[:1] + 0.01 * rng.normal(size=(300, 8))  # all samples at one real point
    p, r = precision_recall(real, collapsed)
    assert p == 1.0 and r < 0.05


# -- the FID Inception-v3 -------------------------------------------------------------------------


@pytest.mark.heavy
def test_inception_loads_safetensors_and_pth_and_matches_pytorch_fid(inception_weights, tmp_path):
    from zoo.metrics.inception import load_inception

    a, digest_a = load_inception(inception_weights["safetensors"])
    b, digest_b = load_inception(inception_weights["pth"])
    assert digest_a == digest_b
    images = detectors.to_uint8((digits.load("heldout")[0][:3] + 1) / 2)
    det = detectors.get("inception", inception=inception_weights["pth"])
    out = det(images)
    assert out["features"].shape == (3, 2048) and out["logits"].shape == (3, 1008)
    assert np.isfinite(out["features"]).all() and out["features"].std() > 1e-3
    x = images.float().div(255).expand(-1, 3, -1, -1)
    with torch.no_grad():
        assert torch.allclose(a(x[:1])["pool"], b(x[:1])["pool"])

    pfid = pytest.importorskip("pytorch_fid.inception")
    from safetensors.torch import load_file

    sd = load_file(inception_weights["safetensors"])
    orig = pfid.load_state_dict_from_url
    pfid.load_state_dict_from_url = lambda *args, **kw: sd  # pytorch-fid's net with our weights, offline
    try:
        peer = pfid.InceptionV3([pfid.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    finally:
        pfid.load_state_dict_from_url = orig
    with torch.no_grad():
        theirs = peer(x)[0].flatten(1).double().numpy()
    np.testing.assert_allclose(out["features"], theirs, rtol=1e-4, atol=1e-6)


def test_inception_weights_errors(tmp_path, monkeypatch):
    from zoo.metrics.inception import load_inception

    monkeypatch.delenv("ZOO_INCEPTION", raising=False)
    with pytest.raises(SpecError, match="nothing is downloaded"):
        detectors.get("inception")
    with pytest.raises(CheckpointError, match="file not found"):
        load_inception(str(tmp_path / "missing.pth"))
    bad = tmp_path / "pickle.pth"
    torch.save({"net": torch.nn.Linear(2, 2)}, bad)  # a pickled module, not a state dict
    with pytest.raises(CheckpointError, match="weights_only"):
        load_inception(str(bad))
    small = tmp_path / "small.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, small)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_inception(str(small))


# -- reference statistics -------------------------------------------------------------------------


@pytest.mark.heavy
def test_reference_statistics_next_to_the_data(tmp_path, inception_weights):
    from PIL import Image
    from safetensors.torch import save_file

    images = digits.load("heldout")[0][:6]
    data = str(tmp_path / "tiny.safetensors")
    save_file({"image": images.contiguous()}, data)
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, im in enumerate(detectors.to_uint8((images + 1) / 2)):
        Image.fromarray(im[0].numpy()).save(folder / f"{i:03d}.png")
    assert torch.equal(load_images(data), load_images(str(folder)))  # PNGs hold exactly the uint8 images

    det = detectors.get("inception", inception=inception_weights["safetensors"])
    stats = reference(data, det, progress=False)
    assert stats_url(data, "inception") == str(tmp_path / "tiny.stats.inception.npz")
    assert (tmp_path / "tiny.stats.inception.npz").is_file() and stats.n == 6 and stats.detector == det.id
    again = ReferenceStats.load(stats_url(data, "inception"))
    np.testing.assert_array_equal(again.sigma, stats.sigma)
    assert stats_url(str(folder), "inception") == f"{folder}/stats.inception.npz"

    # statistics of pytorch-fid / TTUR (mu and sigma only) load; another detector's are refused
    legacy = tmp_path / "legacy.npz"
    np.savez(legacy, mu=stats.mu, sigma=stats.sigma)
    assert reference(str(legacy), det).detector == ""
    digits_stats = reference("builtin:digits", detectors.get("digits"), progress=False)
    assert digits_stats.n == 360 and digits_stats.features.shape == (360, 64)
    other = tmp_path / "other.npz"
    digits_stats.save(str(other))
    with pytest.raises(DataError, match="made by 'digits_classifier"):
        reference(str(other), det)
    with pytest.raises(DataError, match="not builtin:digits"):
        reference(str(tmp_path / "nothing-here"), det)
