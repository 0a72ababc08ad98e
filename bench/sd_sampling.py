"""Stable-Diffusion sampling, as ratios measured in this run on one tiny SD folder (written with
diffusers' own classes, random weights):

- ``model.sample`` (kl_vae + clip_text + sd_unet + our DDIM) vs diffusers' StableDiffusionPipeline
  with DDIMScheduler, same prompt, seed, steps and guidance (goal: parity), with the largest
  difference of their images;
- the sd_unet forward with SDPA attention vs eager softmax(QK^T)V, same weights.

    python bench/sd_sampling.py [--steps 10] [--n 4] [--repeats 3] [--size 32] [--threads 1]

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
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", type=int, default=32, help="image size (latent = size / 2)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--guidance", type=float, default=6.5, help="our w (diffusers' guidance_scale = w + 1)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    with tempfile.TemporaryDirectory() as tmp:
        folder = write_sd_folder(Path(tmp), channels=(32, 64), image_size=a.size)
        model = zoo.load(folder)
        pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        prompt = "a handwritten digit seven"

        def ours():
            return model.sample(a.n, steps=a.steps, solver="ddim", seed=0, prompt=prompt, guidance=a.guidance)

        def theirs():
            return pipe(prompt, num_inference_steps=a.steps, guidance_scale=a.guidance + 1, num_images_per_prompt=a.n,
                        generator=torch.Generator().manual_seed(0), output_type="pt", height=a.size, width=a.size).images

        ours(), theirs()  # warm-up
        diff = (ours() - theirs()).abs().max().item()
        (w_o, c_o), (w_t, c_t) = timed(ours, a.repeats), timed(theirs, a.repeats)
        print(f"sampling {a.n} images {a.size}x{a.size}, {a.steps} DDIM steps, w={a.guidance}, {a.threads} thread(s)")
        print(f"  zoo    : {c_o:.3f} s CPU ({w_o:.3f} s wall)")
        print(f"  diffusers StableDiffusionPipeline: {c_t:.3f} s CPU ({w_t:.3f} s wall)")
        print(f"  ratio zoo / diffusers: {c_o / c_t:.2f} (CPU), {w_o / w_t:.2f} (wall); max |image diff| {diff:.2e}")

        unet = model.denoiser.backbone
        x = torch.randn(2 * a.n, 4, a.size // 2, a.size // 2)
        cond = {"text": model.conditioner.encode([prompt] * (2 * a.n))}
        t = torch.full((2 * a.n,), 500.0)
        from components.backbones.sd_unet import set_attention

        times = {}
        with torch.no_grad():
            for kind in ("sdpa", "eager"):
                set_attention(unet.unet, kind)
                unet(x, t, cond)
                times[kind] = timed(lambda: unet(x, t, cond), a.repeats)
            set_attention(unet.unet, "sdpa")
        print(f"sd_unet forward, batch {2 * a.n}: SDPA {times['sdpa'][1]:.3f} s CPU, eager {times['eager'][1]:.3f} s CPU, "
              f"ratio SDPA / eager {times['sdpa'][1] / times['eager'][1]:.2f}")


if __name__ == "__main__":
    main()
