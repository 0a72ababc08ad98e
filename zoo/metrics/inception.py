"""The Inception-v3 of the FID literature (Heusel et al. 2017): TensorFlow's 2015-12-05 graph as
ported by pytorch-fid (``pt_inception-2015-12-05-6726825d.pth``), the network behind the FID and
Inception Score numbers of DDPM, EDM, consistency models and most papers since.

It is torchvision's Inception3 (1008 classes, no aux head) with TensorFlow's pooling quirks:
average pools that ignore zero padding, and a max pool in the last block (pytorch-fid's
FIDInceptionA/C/E_1/E_2). Input: RGB in [0, 1], resized bilinearly to 299x299, scaled to
[-1, 1]; outputs: the 2048-d pool3 features (FID) and the 1008 logits without bias (the Inception
Score of Salimans et al. 2016 takes ``softmax(pool3 @ W)``, as torch-fidelity's
``logits_unbiased``).

Weights are never downloaded: ``load_inception(url)`` reads them from a path or fsspec URL,
a ``.safetensors`` file or a ``.pth`` read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import functools
import hashlib
import io

import fsspec
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import inception as tv

from zoo.errors import CheckpointError

FEATURES = 2048
CLASSES = 1008
SIZE = 299


def _tf_avg_pool(x: Tensor) -> Tensor:
    """TensorFlow's 3x3 average pool does not count the zero padding."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class _A(tv.InceptionA):
    def _forward(self, x: Tensor) -> list[Tensor]:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return [self.branch1x1(x), b5, b3, self.branch_pool(_tf_avg_pool(x))]


class _C(tv.InceptionC):
    def _forward(self, x: Tensor) -> list[Tensor]:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = layer(d)
        return [self.branch1x1(x), b7, d, self.branch_pool(_tf_avg_pool(x))]


class _E(tv.InceptionE):
    max_pool = False  # the FID graph's last block (Mixed_7c) max-pools, unlike the paper

    def _forward(self, x: Tensor) -> list[Tensor]:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pool = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _tf_avg_pool(x)
        return [self.branch1x1(x), b3, d, self.branch_pool(pool)]


class _EMax(_E):
    max_pool = True


class FIDInceptionV3(nn.Module):
    """(N, 3, H, W) images in [0, 1] -> {"pool": (N, 2048), "logits": (N, 1008)}.

    The state dict has the keys of torchvision's Inception3 (those of the pt_inception file)."""

    def __init__(self):
        super().__init__()
        net = tv.Inception3(num_classes=CLASSES, aux_logits=False, init_weights=False)
        net.Mixed_5b, net.Mixed_5c, net.Mixed_5d = _A(192, 32), _A(256, 64), _A(288, 64)
        net.Mixed_6b, net.Mixed_6c = _C(768, 128), _C(768, 160)
        net.Mixed_6d, net.Mixed_6e = _C(768, 160), _C(768, 192)
        net.Mixed_7b, net.Mixed_7c = _E(1280), _EMax(2048)
        del net.AuxLogits, net.dropout
        self.net = net

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.net.load_state_dict(state_dict, strict=strict, assign=assign)

    def state_dict(self, *args, **kwargs):
        return self.net.state_dict(*args, **kwargs)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        n = self.net
        x = F.interpolate(images, size=(SIZE, SIZE), mode="bilinear", align_corners=False) * 2 - 1
        for layer in (n.Conv2d_1a_3x3, n.Conv2d_2a_3x3, n.Conv2d_2b_3x3, n.maxpool1, n.Conv2d_3b_1x1,
                      n.Conv2d_4a_3x3, n.maxpool2, n.Mixed_5b, n.Mixed_5c, n.Mixed_5d, n.Mixed_6a, n.Mixed_6b,
                      n.Mixed_6c, n.Mixed_6d, n.Mixed_6e, n.Mixed_7a, n.Mixed_7b, n.Mixed_7c):
            x = layer(x)
        pool = x.mean((2, 3))
        return {"pool": pool, "logits": pool @ n.fc.weight.T}


def read_state_dict(url: str) -> dict[str, Tensor]:
    """A state dict from a ``.safetensors`` file, or a ``.pth``/``.pt`` file read with
    ``torch.load(weights_only=True)`` (never an arbitrary pickle)."""
    try:
        with fsspec.open(url, "rb") as f:
            blob = f.read()
    except FileNotFoundError:
        raise CheckpointError(f"Inception weights {url!r}: file not found (nothing is downloaded: "
                              "give the path of pt_inception-2015-12-05-6726825d.pth or a .safetensors copy)") from None
    if url.endswith(".safetensors"):
        from safetensors.torch import load

        try:
            return load(blob)
        except Exception as e:
            raise CheckpointError(f"Inception weights {url!r}: not a valid safetensors file ({e})") from None
    if url.endswith((".pth", ".pt")):
        try:
            sd = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"Inception weights {url!r}: not a plain tensor state dict "
                                  f"(read with weights_only=True): {str(e).splitlines()[0][:200]}") from None
        if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
            raise CheckpointError(f"Inception weights {url!r}: expected a dict of tensors")
        return sd
    raise CheckpointError(f"Inception weights {url!r}: expected a .safetensors or .pth file")


def weights_digest(sd: dict[str, Tensor]) -> str:
    """sha256 of the tensors (names, shapes, bytes), the same for a .pth and its .safetensors copy."""
    h = hashlib.sha256()
    for k in sorted(sd):
        t = sd[k].detach().cpu().contiguous()
        h.update(f"{k}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@functools.lru_cache(maxsize=2)
def load_inception(url: str) -> tuple[FIDInceptionV3, str]:
    """(network in eval mode, weights digest) for weights at ``url``; cached per URL."""
    sd = read_state_dict(url)
    net = FIDInceptionV3()
    try:
        net.load_state_dict(sd)
    except RuntimeError as e:
        lines = " ".join(str(e).splitlines()[:3])[:400]
        raise CheckpointError(f"Inception weights {url!r} do not fit pytorch-fid's FID Inception-v3: {lines}") from None
    return net.eval().requires_grad_(False), weights_digest(sd)
