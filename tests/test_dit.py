"""DiT (Peebles & Xie 2023): adaLN-Zero starts every block as the identity, and the forward pass
equals a computation written out here with plain tensor ops on fixed random weights."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from components.backbones import DitSpec

SPEC = DitSpec(resolution=8, in_channels=3, out_channels=3, patch_size=2, hidden_size=32, depth=2, num_heads=4,
               mlp_ratio=2.0, num_classes=10)


def test_adaln_zero_starts_as_the_identity(one_thread):
    torch.manual_seed(0)
    net = SPEC.build()
    x, c = torch.randn(2, 16, 32), torch.randn(2, 32)
    for block in net.blocks:
        assert torch.equal(block(x, c), x)
    out = net(torch.randn(2, 3, 8, 8), torch.tensor([3.0, 700.0]), {"label": torch.tensor([1, 10])})
    assert out.shape == (2, 3, 8, 8) and torch.equal(out, torch.zeros_like(out))


def reference(net, x, c_noise, labels):
    """DiT's forward from its weights, written out (section 3.2 of the paper, their models.py)."""
    s = net.spec
    p, d, n_h = s.patch_size, s.hidden_size, s.num_heads
    b, g = x.shape[0], s.resolution // p
    # patchify: token (i, j) sees x[:, :, i p:(i+1) p, j p:(j+1) p], flattened (channel, row, col)
    patches = x.reshape(b, s.in_channels, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(b, g * g, -1)
    w = net.x_embedder.proj.weight.reshape(d, -1)
    h = patches @ w.T + net.x_embedder.proj.bias
    # 2D sin-cos positions: first half from the column index, second half from the row index
    omega = 1.0 / 10000 ** (torch.arange(d // 4, dtype=torch.float64) / (d / 4))
    rows, cols = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")

    def sc(pos):
        a = pos.reshape(-1, 1).double() * omega
        return torch.cat([a.sin(), a.cos()], 1)

    h = h + torch.cat([sc(cols), sc(rows)], 1).float()
    # c = MLP(freq(t)) + label embedding; freq = [cos | sin] of t * 10000^(-k/128)
    freqs = torch.exp(-math.log(10000) * torch.arange(128) / 128)
    temb = torch.cat([torch.cos(c_noise[:, None] * freqs), torch.sin(c_noise[:, None] * freqs)], 1)
    t1, t2 = net.t_embedder[0], net.t_embedder[2]
    c = F.silu(temb @ t1.weight.T + t1.bias) @ t2.weight.T + t2.bias + net.y_embedder.weight[labels]

    def ln(z):
        mu, var = z.mean(-1, keepdim=True), z.var(-1, unbiased=False, keepdim=True)
        return (z - mu) / torch.sqrt(var + 1e-6)

    def lin(z, layer):
        return z @ layer.weight.T + layer.bias

    for blk in net.blocks:
        mod = lin(F.silu(c), blk.adaLN_modulation[1])
        sh1, sc1, g1, sh2, sc2, g2 = (m[:, None] for m in mod.split(d, 1))
        z = ln(h) * (1 + sc1) + sh1
        q, k, v = lin(z, blk.attn.qkv).reshape(b, -1, 3, n_h, d // n_h).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // n_h), -1) @ v
        h = h + g1 * lin(att.transpose(1, 2).reshape(b, -1, d), blk.attn.proj)
        z = ln(h) * (1 + sc2) + sh2
        h = h + g2 * lin(F.gelu(lin(z, blk.mlp.fc1), approximate="tanh"), blk.mlp.fc2)
    fl = net.final_layer
    sh, scl = lin(F.silu(c), fl.adaLN_modulation[1]).split(d, 1)
    out = lin(ln(h) * (1 + scl[:, None]) + sh[:, None], fl.linear)  # (b, g*g, p*p*C), ordered (row, col, channel)
    out = out.reshape(b, g, g, p, p, s.out_channels).permute(0, 5, 1, 3, 2, 4)
    return out.reshape(b, s.out_channels, g * p, g * p)


def test_forward_equals_the_reference_on_fixed_weights(one_thread):
    torch.manual_seed(0)
    net = SPEC.build()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for prm in net.parameters():
            prm.copy_(torch.randn(prm.shape, generator=gen) * 0.2)
    x = torch.randn(3, 3, 8, 8, generator=gen)
    t = torch.tensor([0.0, 17.5, 999.0])
    labels = torch.tensor([0, 7, 10])
    with torch.no_grad():
        ours = net(x, t, {"label": labels})
        ref = reference(net, x, t, labels)
    assert ours.abs().mean() > 0.1
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_text_conditioned_dit_uses_the_text(one_thread):
    spec = SPEC.model_copy(update={"num_classes": None, "cross_attention_dim": 16})
    net = spec.build()
    with torch.no_grad():
        for blk in [*net.blocks, net.final_layer]:
            blk.adaLN_modulation[1].weight.normal_()
        net.final_layer.linear.weight.normal_()
    x = torch.randn(2, 3, 8, 8)
    a = net(x, torch.tensor([5.0]), {"text": torch.randn(2, 4, 16)})
    b = net(x, torch.tensor([5.0]), {"text": torch.randn(2, 4, 16)})
    assert (a - b).abs().max() > 1e-3
    with pytest.raises(ValueError, match="needs cond\\['text'\\]"):
        net(x, torch.tensor([5.0]), None)
    with pytest.raises(ValueError, match="class- or text-conditioned"):
        DitSpec(**{**SPEC.model_dump(), "cross_attention_dim": 16})


def test_cross_attention_starts_as_the_identity_and_reads_every_token(one_thread):
    """With cross_attention every block also attends to all text tokens (PixArt-alpha): zero-initialized,
    so the block is still the identity at init; trained, a change in an early token (the prompted word,
    not the pooled last one) changes the output, which the pooled-only DiT cannot see."""
    spec = SPEC.model_copy(update={"num_classes": None, "cross_attention_dim": 16, "cross_attention": True})
    net = spec.build()
    x, c, text = torch.randn(2, 16, 32), torch.randn(2, 32), torch.randn(2, 4, 16)
    for block in net.blocks:
        assert torch.equal(block(x, c, text), x)
    pooled_only = SPEC.model_copy(update={"num_classes": None, "cross_attention_dim": 16}).build()
    for m in (net, pooled_only):
        with torch.no_grad():
            for prm in m.parameters():
                prm.copy_(torch.randn_like(prm) * 0.2)
    other = text.clone()
    other[:, 1] += 1.0  # an early token; the last one is unchanged
    img, t = torch.randn(2, 3, 8, 8), torch.tensor([5.0])
    with torch.no_grad():
        assert (net(img, t, {"text": text}) - net(img, t, {"text": other})).abs().max() > 1e-3
        assert torch.equal(pooled_only(img, t, {"text": text}), pooled_only(img, t, {"text": other}))
    with pytest.raises(ValueError, match="cross_attention needs a text condition"):
        DitSpec(**{**SPEC.model_dump(), "cross_attention": True})
