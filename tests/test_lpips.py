"""LPIPS as the consistency objectives' distance: lpips' own module on weights given by path
(random ones written here; nothing is downloaded, pickles are refused), images upsampled to 224
as openai's consistency_models does."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from components.denoisers import ConsistencySpec
from components.denoisers.base import Denoiser
from components.noise import EdmProcessSpec
from components.objectives import OBJECTIVES
from components.objectives.lpips_distance import LpipsSpec
from components.random import RandomSource

pytest.importorskip("lpips")


def images(n: int, c: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("net,resize", [("alex", 224), ("vgg", 64)])
def test_distance_equals_lpips_own_module_on_the_same_weights(lpips_weights, net, resize):
    w = lpips_weights(net)
    ours = LpipsSpec(net=net, weights=w["weights"], backbone=w["backbone"], resize=resize).build()
    # built on the meta device, then every tensor assigned from the files
    assert all(v.device.type == "cpu" and v.dtype == torch.float32 for v in ours.state_dict().values())
    a, b = images(3, seed=1), images(3, seed=2)
    up = lambda x: F.interpolate(x, size=resize, mode="bilinear")  # noqa: E731
    with torch.no_grad():
        want = w["net"](up(a), up(b)).flatten()
        got = ours(a, b)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
        assert (got > 0).all() and torch.equal(ours(a, a), torch.zeros(3))
        # 1-channel images are compared as gray RGB
        torch.testing.assert_close(ours(a[:, :1], b[:, :1]), w["net"](up(a[:, :1].expand(-1, 3, -1, -1)),
                                                                        up(b[:, :1].expand(-1, 3, -1, -1))).flatten())


def test_weights_are_safetensors_given_by_path(lpips_weights, tmp_path):
    w = lpips_weights("alex")
    pickle = tmp_path / "alex.pth"
    torch.save({}, pickle)
    with pytest.raises(ValueError, match=r"lpips.backbone: .*alex.pth.* pickled weights are never loaded"):
        LpipsSpec(net="alex", weights=w["weights"], backbone=str(pickle)).build()
    from safetensors.torch import save_file

    empty = tmp_path / "empty.safetensors"
    save_file({}, str(empty))
    with pytest.raises(ValueError, match=r"no weights given for \['lin0"):
        LpipsSpec(net="alex", weights=str(empty), backbone=w["backbone"]).build()
    with pytest.raises(ValueError, match="shape|unexpected tensor"):  # a VGG trunk is not an AlexNet
        LpipsSpec(net="alex", weights=w["weights"], backbone=lpips_weights("vgg")["backbone"]).build()


@pytest.mark.parametrize("kind", ["cd", "ct", "ict"])
def test_consistency_objectives_train_through_lpips(lpips_weights, kind):
    """The student gets gradients through LPIPS; the metric's weights are not objective state."""
    from tests.test_consistency import TinyNet
    from zoo.testing import GaussianDenoiser

    w = lpips_weights("alex")
    dist = {"kind": "lpips", "net": "alex", "weights": w["weights"], "backbone": w["backbone"], "resize": 64}
    extra = {"teacher_solver": "euler", "levels": 4} if kind == "cd" else {}
    spec = OBJECTIVES.parse({"kind": kind, "distance": dist, **extra})
    process = EdmProcessSpec().build()
    student = Denoiser(TinyNet(), process, ConsistencySpec().build())
    teacher = GaussianDenoiser(process, torch.zeros(3, 8, 8), 0.5 * torch.ones(3, 8, 8)) if kind == "cd" else None
    obj = spec.build()
    obj.attach(student, teacher, 100)
    assert not any("lpips" in k or "lin0" in k for k in obj.state_dict())
    loss, _ = obj.loss(student, {"x0": images(2, size=8)}, RandomSource.from_seed(0, 2), 50)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
