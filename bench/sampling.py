"""Sampling speed, as ratios measured in this run on the same network (ddpm-digits' UNet):

- our solver loop (``Model.sample``: grid, prior, guidance/clipping binding, solver, decode)
  vs the same number of bare network forwards: the solver's overhead;
- our DDIM / DDPM (/ DPM-Solver++(2M) where the zoo has it) vs diffusers' DDIMScheduler /
  DDPMScheduler (/ DPMSolverMultistepScheduler) stepping the same network with
  the same number of steps, plus the largest difference of their samples on the same timesteps
  and the same initial noise (a check that the two compute the same thing).

    python bench/sampling.py [--n 16] [--steps 10] [--repeats 5] [--threads 1]

Times are CPU time of one thread (robust on a machine shared with other work); wall time is printed too.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import zoo  # noqa: E402
from components.denoisers import bind  # noqa: E402
from components.random import RandomSource  # noqa: E402
from components.solvers import DdimSpec  # noqa: E402
from zoo.evaluation.plan import solver_kinds  # noqa: E402


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process). On a shared machine the CPU time is the robust
    one: other processes' load stretches the wall clock, not the work done."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="ddpm-digits")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time is exact work)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
    except ImportError:
        print("diffusers is not installed (pip install 'diffusion-zoo[hf]'): peer comparisons skipped")
        DDIMScheduler = DDPMScheduler = DPMSolverMultistepScheduler = None  # noqa: N806

    torch.manual_seed(0)
    model = zoo.build(args.model).eval()
    proc, net, n, steps = model.process, model.denoiser.backbone, args.n, args.steps
    T = proc.timesteps
    if T is None or model.spec.denoiser.kind != "eps":
        print(f"{args.model}: the diffusers comparison needs a discrete eps-prediction model")
        return 2
    shape = (n, *model.latent_shape)
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(0))

    @torch.no_grad()
    def bare():
        x = x_T.clone()
        for i in range(steps):
            x = net(x, torch.full((n,), float(T - 1 - i * (T // steps))), None)

    def ours(kind):
        return lambda: model.sample(n, steps=steps, solver=kind, seed=0)

    def peer(kind, sched):
        @torch.no_grad()
        def run():
            sched.set_timesteps(steps)
            x, g = x_T.clone(), torch.Generator().manual_seed(0)
            for t in sched.timesteps:
                eps = net(x, t.float().expand(n), None)
                kw = {"ddim": {"use_clipped_model_output": True}, "ddpm": {"generator": g}}.get(kind, {})
                x = sched.step(eps, t, x, **kw).prev_sample
            return x

        return run

    betas = dict(num_train_timesteps=T, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    # our solver kind -> the diffusers scheduler of the same algorithm; kinds not in this zoo's
    # SolverSpec union at run time are left out (DPM-Solver++(2M) joins with its solver file)
    peers = {"ddim": lambda: DDIMScheduler(**betas, clip_sample=True, set_alpha_to_one=True),
             "ddpm": lambda: DDPMScheduler(**betas, clip_sample=True, variance_type="fixed_small"),
             "dpmpp_2m": lambda: DPMSolverMultistepScheduler(**betas, algorithm_type="dpmsolver++", solver_order=2)}
    kinds = [k for k in peers if k in solver_kinds()]
    candidates = {"bare forwards": bare, **{f"ours {k}": ours(k) for k in kinds}}
    if DDIMScheduler is not None:
        candidates.update({f"diffusers {k}": peer(k, peers[k]()) for k in kinds})
    for fn in candidates.values():  # warm-up
        fn()
    times = {k: [] for k in candidates}
    for _ in range(args.repeats):  # interleaved, so load from other processes hits every candidate alike
        for k, fn in candidates.items():
            times[k].append(timed(fn))
    wall = {k: statistics.median(w for w, _ in v) for k, v in times.items()}
    med = {k: statistics.median(c for _, c in v) for k, v in times.items()}  # CPU seconds

    print(f"{args.model}: {n} samples x {steps} steps, {torch.get_num_threads()} threads, median of {args.repeats}; "
          "ratios of CPU time")
    for k, v in med.items():
        print(f"  {k:16s} cpu {v * 1000:8.1f} ms ({v / steps / n * 1e6:7.1f} us per sample-step)   wall {wall[k] * 1000:8.1f} ms")
    for k in kinds:
        print(f"ratio ours {k} / bare forwards:{'':8s}{med[f'ours {k}'] / med['bare forwards']:.3f}")
    if DDIMScheduler is not None:
        for k in kinds:
            print(f"ratio ours {k} / diffusers {k}:{'':6s}{med[f'ours {k}'] / med[f'diffusers {k}']:.3f}")
        # same timesteps (diffusers' 'leading' spacing), same x_T: the same deterministic samples
        sched = peers["ddim"]()
        sched.set_timesteps(steps)
        ts = torch.cat([(sched.timesteps.double() + 1) / T, torch.zeros(1, dtype=torch.float64)])
        with torch.no_grad():
            fn = bind(model.denoiser, None, None, 0.0, model.spec.sampling.clip_x0)
            mine = DdimSpec(eta=0.0).build()(fn, proc, x_T.clone(), ts, RandomSource.from_seed(0, n))
            theirs = peer("ddim", sched)()
        print(f"max |ours - diffusers| DDIM on the same timesteps: {(mine - theirs).abs().max().item():.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
