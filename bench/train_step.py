"""Training throughput, as a ratio measured in this run: zoo's training loop (``zoo.train``:
seeded per-step randomness, objective, EMA, warmup, clipping, metrics) against a plain PyTorch
loop doing the same math on the same UNet (DSM eps loss, AdamW, gradient clipping, EMA) with
the same batch size. Both are timed over the same number of steps after the same warm-up.

    python bench/train_step.py [--steps 10] [--batch-size 64]

Measured in CPU time of one thread, so the ratio holds on a machine shared with other work.
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


def cpu_seconds(fn) -> float:
    """CPU time of this process: on a shared machine other processes stretch the wall clock, not
    the work done (run with one torch thread so it is the work of one core)."""
    c = time.process_time()
    fn()
    return time.process_time() - c


def zoo_loop(name: str, steps: int, batch: int) -> float:
    """Images per CPU-second of zoo.train: the cost of 2 x steps minus the cost of steps, so
    set-up, the first steps and the final checkpoint cancel out."""
    def train(k: int):
        with tempfile.TemporaryDirectory() as out:
            zoo.train(name, output=out, steps=k, log_every=k, checkpoint_every=k, batch_size=batch,
                      grid_samples=0, progress=False, device="cpu")

    short, long = cpu_seconds(lambda: train(steps)), cpu_seconds(lambda: train(2 * steps))
    return steps * batch / (long - short)


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
    return steps * batch / cpu_seconds(lambda: [step() for _ in range(steps)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="ddpm-digits")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time is exact work)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    plain = plain_loop(args.model, args.steps, args.batch_size)
    ours = zoo_loop(args.model, args.steps, args.batch_size)
    plain2 = plain_loop(args.model, args.steps, args.batch_size)  # again, to see the machine's drift
    print(f"{args.model}: batch {args.batch_size}, {args.steps} timed steps after {args.steps} warm-up, "
          f"{torch.get_num_threads()} threads")
    print(f"  plain PyTorch loop  {plain:8.1f} img per CPU-second  (repeat: {plain2:.1f})")
    print(f"  zoo.train loop      {ours:8.1f} img per CPU-second")
    print(f"ratio zoo / plain PyTorch throughput: {ours / ((plain + plain2) / 2):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
