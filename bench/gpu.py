"""GPU benchmark of the Stable-Diffusion path (prepared for a GPU machine; exits on a CPU-only one):

1. an SD-1.5-sized sd_unet (the catalog's, random weights), bf16, batch --batch of 64x64 latents:
   forward and forward+backward time per attention backend: SDPA, eager, xformers (when installed);
2. images/s of ``model.sample`` vs diffusers' StableDiffusionPipeline + DDIMScheduler on the same
   weights (exported with export_diffusers), fp16/bf16, --steps DDIM steps, guidance 7.5.

    python bench/gpu.py [--batch 8] [--steps 20] [--dtype bf16] [--repeats 5]

Prints ratios measured in the same run; no absolute claims.
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
from components.backbones.sd_unet import set_attention  # noqa: E402


def cuda_time(fn, repeats: int) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-pipeline", action="store_true")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench/gpu.py needs a CUDA GPU")
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float16
    dev = torch.device("cuda")
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}, {a.dtype}, batch {a.batch}")

    model = zoo.build("sd-1.5").to(dev, dtype)
    unet = model.denoiser.backbone
    x = torch.randn(a.batch, 4, 64, 64, device=dev, dtype=dtype)
    t = torch.full((a.batch,), 500.0, device=dev)
    cond = {"text": torch.randn(a.batch, 77, 768, device=dev, dtype=dtype)}
    backends = ["sdpa", "eager"]
    try:
        import xformers  # noqa: F401

        backends.append("xformers")
    except ImportError:
        print("xformers not installed: SDPA vs eager only")
    fwd, fwdbwd = {}, {}
    for kind in backends:
        set_attention(unet.unet, kind)
        with torch.no_grad():
            fwd[kind] = cuda_time(lambda: unet(x, t, cond), a.repeats)

        def step():
            unet.zero_grad(set_to_none=True)
            unet(x, t, cond).float().square().mean().backward()

        unet.train()
        unet.set_grad_checkpointing(False)
        fwdbwd[kind] = cuda_time(step, a.repeats)
        unet.eval()
        print(f"  {kind:9s} forward {fwd[kind] * 1e3:8.1f} ms   forward+backward {fwdbwd[kind] * 1e3:8.1f} ms   "
              f"peak mem {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
        torch.cuda.reset_peak_memory_stats()
    for kind in backends[1:]:
        print(f"  ratio {kind}/sdpa: forward {fwd[kind] / fwd['sdpa']:.2f}, forward+backward {fwdbwd[kind] / fwdbwd['sdpa']:.2f}")
    set_attention(unet.unet, "sdpa")
    unet.zero_grad(set_to_none=True)
    if a.skip_pipeline:
        return

    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from zoo.testing_sd import write_sd_folder

    with tempfile.TemporaryDirectory() as tmp:
        # a full-size SD-1.5 folder needs a CLIP tokenizer: the package's small one over a few words
        src = zoo.load(write_sd_folder(Path(tmp) / "tok", max_length=77))
        model.conditioner.tokenizer = src.conditioner.tokenizer
        model = model.float()
        model.export_diffusers(str(Path(tmp) / "sd15"))
        ours = zoo.load(str(Path(tmp) / "sd15")).to(dev, dtype)
        pipe = StableDiffusionPipeline.from_pretrained(str(Path(tmp) / "sd15"), torch_dtype=dtype,
                                                       safety_checker=None, requires_safety_checker=False).to(dev)
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        prompt = "a handwritten digit seven"
        t_ours = cuda_time(lambda: ours.sample(a.batch, steps=a.steps, solver="ddim", seed=0, prompt=prompt, guidance=6.5), 2)
        t_pipe = cuda_time(lambda: pipe(prompt, num_inference_steps=a.steps, guidance_scale=7.5, num_images_per_prompt=a.batch,
                                        generator=torch.Generator(dev).manual_seed(0), output_type="pt"), 2)
        print(f"sampling {a.batch} images 512x512, {a.steps} DDIM steps: zoo {a.batch / t_ours:.2f} img/s, "
              f"diffusers {a.batch / t_pipe:.2f} img/s, ratio zoo/diffusers time {t_ours / t_pipe:.2f}")


if __name__ == "__main__":
    main()
