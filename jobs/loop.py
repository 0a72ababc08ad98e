"""The training loop of one worker, for every objective.

``train_loop(run, ctx)`` is the per-worker function: the same code runs in-process and inside a
Ray Train TorchTrainer (``jobs.ray_context.train_loop_per_worker``). It is stateless apart from
the weights, the EMA and the optimizer: the data position, the learning rate, the EMA decay and
every random draw are functions of (seed, step), so resuming from a checkpoint continues the
exact run that was interrupted, and W workers with B/W rows each see the data and noise one
worker with B rows sees.
"""

from __future__ import annotations

import tempfile
import time
from contextlib import nullcontext
from typing import Any

import torch
from tqdm.auto import tqdm

from components.denoisers import Denoiser
from components.random import RandomSource, derive_seed
from jobs.context import WorkerContext
from jobs.data import open_data
from jobs.ema import Ema
from zoo import checkpoint as ckpt
from zoo.errors import NonFiniteLossError
from zoo.loading import fit_weights, load_weights
from zoo.model import Model
from zoo.specs import RunSpec


def build_optimizer(params, spec) -> torch.optim.Optimizer:
    cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[spec.kind]
    return cls(params, lr=spec.lr, betas=spec.betas, eps=spec.eps, weight_decay=spec.weight_decay)


def lr_at(step: int, spec) -> float:
    """Linear warmup to lr over warmup_steps, then constant (Ho et al. 2020, appendix B)."""
    return spec.lr * min(1.0, (step + 1) / spec.warmup_steps) if spec.warmup_steps else spec.lr


def train_loop(run: RunSpec, ctx: WorkerContext, progress: bool = True) -> dict[str, Any]:
    tr = run.train
    device = ctx.device
    torch.manual_seed(derive_seed(tr.seed, "init"))  # identical initial weights on every rank
    model = Model(run.model, run.name).to(device)
    if run.model.weights and ctx.latest_checkpoint() is None:  # fine-tuning (reflow: k-RF from (k-1)-RF)
        load_weights(model, run.model.weights, ema=True)
    if tr.grad_checkpointing and hasattr(model.denoiser.backbone, "set_grad_checkpointing"):
        model.denoiser.backbone.set_grad_checkpointing(True)
    objective = tr.objective.build().to(device)
    optimizer = build_optimizer(model.denoiser.parameters(), tr.optimizer)
    ema = Ema(model.denoiser, tr.ema.decay, tr.ema.warmup)

    start = 0
    resume = ctx.latest_checkpoint()
    if resume is not None:
        c = ckpt.Checkpoint(resume)
        fit_weights(model, c.tensors("model.safetensors"), c.url)
        ema.load_state_dict(c.tensors("ema.safetensors"))
        optimizer.load_state_dict(c.optimizer_state())
        start = c.step

    # the objective trains through the (possibly DDP-wrapped) backbone; EMA and checkpoints
    # read the plain model.denoiser, which shares its parameters
    trained = Denoiser(ctx.wrap(model.denoiser.backbone), model.process, model.denoiser.parameterization)
    data = open_data(tr, ctx.rank, ctx.world_size)
    local = tr.batch_size // ctx.world_size
    rows = slice(ctx.rank * local, (ctx.rank + 1) * local)
    amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[tr.precision]
    scaler = torch.amp.GradScaler(device.type, enabled=tr.precision == "fp16")

    bar = tqdm(total=tr.steps, initial=start, desc=f"train {run.name}",
               disable=not progress or ctx.rank != 0, mininterval=2.0)
    window_t, window_n, last = time.perf_counter(), 0, {}
    model.train()
    for step in range(start, tr.steps):
        raw = data.batch(step)
        noise = RandomSource.for_step(tr.seed, step, tr.batch_size, rows, device)
        raw = {k: v.to(device) for k, v in raw.items()}
        with torch.no_grad():
            x0 = raw.pop("latent") if "latent" in raw else model.encode(raw.pop("image"))
        cond = model.conditioner(raw, noise)
        extra = {k: v for k, v in raw.items() if k != "label"}  # e.g. reflow's noise pairs
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, tr.optimizer)
        autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
        with autocast:
            loss, metrics = objective.loss(trained, {**extra, "x0": x0, "cond": cond}, noise, step)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"{run.name}: loss is {loss.item()} at step {step}; stopping. The last good checkpoint "
                "stays the resume point (lower the lr, enable grad_clip or use fp32/bf16)."
            )
        scaler.scale(loss).backward()
        if tr.optimizer.grad_clip is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.denoiser.parameters(), tr.optimizer.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        ema.update(model.denoiser, step)
        objective.after_step(model.denoiser, step)

        done = step + 1
        window_n += tr.batch_size
        bar.update(1)
        is_ckpt = done % tr.checkpoint_every == 0 or done == tr.steps
        if done % tr.log_every == 0 or is_ckpt:
            elapsed = time.perf_counter() - window_t
            last = {"step": done, "loss": loss.item(), **{k: float(v) for k, v in metrics.items()},
                    "lr": lr_at(step, tr.optimizer), "img_per_s": window_n / max(elapsed, 1e-9)}
            bar.set_postfix(loss=f"{last['loss']:.4f}", img_s=f"{last['img_per_s']:.0f}")
            window_t, window_n = time.perf_counter(), 0
            if not is_ckpt:
                ctx.report(last)
        if is_ckpt:
            _checkpoint(run, ctx, model, ema, optimizer, done, last)
    bar.close()
    return last


def _checkpoint(run: RunSpec, ctx: WorkerContext, model: Model, ema: Ema, optimizer, step: int, metrics: dict) -> None:
    if ctx.rank != 0:
        ctx.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="zoo-ckpt-") as tmp:
        ckpt.write(tmp, run.model_dump_json(), model.trainable_state_dict(), ema.state_dict(), optimizer.state_dict(), step)
        ctx.report(metrics, checkpoint_dir=tmp)
