"""Training throughput, as a ratio measured in this run: zoo's training loop (``zoo.train``:
seeded per-step randomness, objective, EMA, warmup, clipping, metrics) against a plain PyTorch
loop doing the same math on the same UNet (DSM eps loss, AdamW, gradient clipping, EMA) with
the same batch size. Both are timed over the same number of steps after the same warm-up.

    python bench/train_step.py [--steps 15] [--batch-size 128]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import zoo  # noqa: E402
from zoo.data import digits  # noqa: E402


def zoo_loop(name: str, steps: int, batch: int) -> float:
    """Images/s of zoo.train over the second half of 2 x steps (the first half warms up)."""
    with tempfile.TemporaryDirectory() as out:
        run = zoo.train(name, output=out, steps=2 * steps, log_every=steps, checkpoint_every=2 * steps,
                        batch_size=batch, grid_samples=0, progress=False, device="cpu")
    return run.metrics[-1]["img_per_s"]


def plain_loop(name: str, steps: int, batch: int) -> float:
    """The same math in a plain loop: x_t = sqrt(ab) x0 + sqrt(1-ab) eps, MSE on eps."""
    spec = zoo.get(name, batch_size=batch)
    tr = spec.train
    torch.manual_seed(0)
    net = spec.model.backbone.build()
    ema = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.AdamW(net.parameters(), lr=tr.optimizer.lr, betas=tr.optimizer.betas, weight_decay=tr.optimizer.weight_decay)
    T = spec.model.process.timesteps or 1000
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    alphabar = torch.cumprod(1 - betas, 0).float()
    x_all = digits.load("train")[0]
    g = torch.Generator().manual_seed(0)

    def step():
        x0 = x_all[torch.randint(0, len(x_all), (batch,), generator=g)]
        t = torch.randint(0, T, (batch,), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        ab = alphabar[t].view(-1, 1, 1, 1)
        loss = F.mse_loss(net(ab.sqrt() * x0 + (1 - ab).sqrt() * eps, t.float(), None), eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), tr.optimizer.grad_clip or float("inf"))
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in net.parameters()], 1 - tr.ema.decay)

    for _ in range(steps):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="ddpm-digits")
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=128)
    args = p.parse_args(argv)
    plain = plain_loop(args.model, args.steps, args.batch_size)
    ours = zoo_loop(args.model, args.steps, args.batch_size)
    plain2 = plain_loop(args.model, args.steps, args.batch_size)  # again, to see the machine's drift
    print(f"{args.model}: batch {args.batch_size}, {args.steps} timed steps after {args.steps} warm-up, "
          f"{torch.get_num_threads()} threads")
    print(f"  plain PyTorch loop  {plain:8.1f} img/s  (repeat: {plain2:.1f})")
    print(f"  zoo.train loop      {ours:8.1f} img/s")
    print(f"ratio zoo / plain PyTorch throughput: {ours / ((plain + plain2) / 2):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
