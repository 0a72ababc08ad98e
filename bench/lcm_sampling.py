"""Images/s of a latent consistency model's 4-step sampling vs its teacher's 25-step
DPM-Solver++(2M) with classifier-free guidance, at equal batch, as a ratio measured in this run
(LCM paper, section 5: few-step inference). Both are tiny SD-layout folders written with
diffusers' own classes (random weights): the same UNet architecture, the LCM one with the
guidance-scale embedding (time_cond_proj_dim), so the ratio is the sampler's, not the weights'.

    python bench/lcm_sampling.py [--n 4] [--repeats 3] [--threads 1] [--teacher-steps 25]

CPU time of this process is the robust number on a shared machine; wall time is printed too.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import zoo  # noqa: E402
from zoo.testing_sd import write_sd_folder  # noqa: E402

PROMPT = "a handwritten digit seven"


def timed(fn, repeats: int) -> tuple[float, float]:
    walls, cpus = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--teacher-steps", type=int, default=25)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        teacher = zoo.load(write_sd_folder(Path(tmp) / "teacher"))
        lcm = zoo.load(write_sd_folder(Path(tmp) / "lcm", lcm_w_dim=16))
        slow = timed(lambda: teacher.sample(args.n, steps=args.teacher_steps, solver="dpmpp_2m", prompt=PROMPT,
                                            guidance=7.5), args.repeats)
        fast = timed(lambda: lcm.sample(args.n, steps=4, prompt=PROMPT, guidance=7.5), args.repeats)
    for label, (wall, cpu) in (("teacher dpmpp_2m %d steps + CFG" % args.teacher_steps, slow), ("lcm 4 steps", fast)):
        print(f"{label:34s} {args.n / cpu:8.2f} images/CPU-s   {args.n / wall:8.2f} images/s wall")
    print(f"LCM speed-up: {slow[1] / fast[1]:.1f}x (CPU time), {slow[0] / fast[0]:.1f}x (wall); "
          f"network rows: {2 * args.teacher_steps} vs 4 per image")


if __name__ == "__main__":
    main()
