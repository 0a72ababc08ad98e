"""The training loop of one worker, for every objective.

``train_loop(run, ctx)`` is the per-worker function: the same code runs in-process and inside a
Ray Train TorchTrainer (``jobs.ray_train``). It is stateless apart from the weights, the EMA,
the optimizer and the data position: the learning rate, the EMA decay and every random draw are
functions of (seed, step), so resuming from a checkpoint continues the exact run that was
interrupted, and W workers with B/W rows each see the data and noise one worker with B rows sees.

The global batch B is fixed by the spec whatever the worker count: each worker takes
B / workers rows and, with ``micro_batch_size``, accumulates them in micro-batches (the gradient
all-reduce runs once, on the last one).
"""

from __future__ import annotations

import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from components.denoisers import Denoiser
from components.random import RandomSource, derive_seed
from jobs import parallel
from jobs.context import WorkerContext
from jobs.data import open_data
from jobs.ema import Ema
from jobs.teacher import load_teacher
from zoo import checkpoint as ckpt
from zoo.errors import NonFiniteLossError
from zoo import lora_file
from zoo.lora import add_adapter
from zoo.loading import fit_weights
from zoo.resolve import base_model
from zoo.model import Model
from zoo.specs import RunSpec


def build_optimizer(params, spec) -> torch.optim.Optimizer:
    cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[spec.kind]
    return cls(params, lr=spec.lr, betas=spec.betas, eps=spec.eps, weight_decay=spec.weight_decay)


def attach_objective(objective: Any, model: Model, tr: Any, device: torch.device) -> None:
    """Objectives with a teacher or a target network (cd, ...) get the frozen
    teacher (resolved from ``objective.teacher`` by :func:`jobs.teacher.load_teacher`), the student
    to copy theta^- from, and the run's total steps. Called before any resume, so the restored
    objective state lands in an existing target network."""
    if not hasattr(objective, "attach"):
        return
    spec = tr.objective
    teacher = None
    if getattr(spec, "teacher", None):
        teacher = load_teacher(spec.teacher, getattr(spec, "teacher_weights", None), device).denoiser
    objective.attach(model.denoiser, teacher, tr.steps)
    if hasattr(objective, "attach_conditioner"):  # lcd: the null condition of the teacher's guidance
        objective.attach_conditioner(model.conditioner)
    objective.to(device)


def lr_at(step: int, spec) -> float:
    """Linear warmup to lr over warmup_steps, then constant (Ho et al. 2020, appendix B)."""
    return spec.lr * min(1.0, (step + 1) / spec.warmup_steps) if spec.warmup_steps else spec.lr


def train_loop(run: RunSpec, ctx: WorkerContext, progress: bool = True) -> dict[str, Any]:
    tr = run.train
    device = ctx.device
    torch.manual_seed(derive_seed(tr.seed, "init"))  # identical initial weights on every rank
    # fine-tuning starts from model.weights (reflow: k-RF from (k-1)-RF); a LoRA run's checkpoints
    # hold only its adapters, so its base is read on resume too
    base = run.model.weights if ctx.latest_checkpoint() is None or tr.lora is not None else None
    model = base_model(run.model, run.name, base).to(device)
    if tr.lora is not None:  # before the optimizer: only the adapters train (zoo/lora.py)
        add_adapter(model, tr.lora, seed=derive_seed(tr.seed, "lora"))
    if tr.grad_checkpointing and hasattr(model.denoiser.backbone, "set_grad_checkpointing"):
        model.denoiser.backbone.set_grad_checkpointing(True)
    objective = tr.objective.build().to(device)
    attach_objective(objective, model, tr, device)  # teacher + target network (DESIGN.md 2b)

    start, data_state, resume = 0, None, ctx.latest_checkpoint()
    if resume is not None:
        c = ckpt.Checkpoint(resume)
        fit_weights(model, c.tensors("model.safetensors"), c.url)
        start, data_state = c.step, c.state().get("data")

    # the objective trains through the (DDP-wrapped or FSDP-sharded) backbone; EMA and
    # checkpoints read the plain model.denoiser, which shares its parameters
    wrapped = ctx.wrap(model.denoiser.backbone)
    trained = Denoiser(wrapped, model.process, model.denoiser.parameterization)
    optimizer = build_optimizer([p for p in model.denoiser.parameters() if p.requires_grad], tr.optimizer)
    ema = Ema(model.denoiser, tr.ema.decay, tr.ema.warmup, keys=model.trainable_state_dict().keys())
    if resume is not None:
        ema.load_state_dict(c.tensors("ema.safetensors"))
        if objective.state_dict():  # the objective's state (theta^-) resumes with the run
            objective.load_state_dict(c.tensors(ckpt.OBJECTIVE))
        optimizer.load_state_dict(c.optimizer_state())
        parallel.place_optimizer_state(optimizer)
        ctx.event({"event": "resumed", "step": start, "from": resume})

    data = open_data(tr, ctx.rank, ctx.world_size, shard=ctx.dataset_shard(), state=data_state, start=start,
                     counter=ctx.bad_samples)
    amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[tr.precision]
    scaler = torch.amp.GradScaler(device.type, enabled=tr.precision == "fp16")
    for cb in ctx.callbacks:
        cb.on_train_start(start, ctx.rank)

    bar = ctx.progress(total=tr.steps, initial=start, desc=f"train {run.name}",
                       disable=not progress or ctx.rank != 0, mininterval=2.0)
    parts = Parts(model, trained, wrapped, objective, optimizer, ema, data, scaler, amp_dtype)
    try:
        last = _steps(run, ctx, parts, start, bar)
    finally:
        data.close()
        bar.close()
    return last


@dataclass
class Parts:
    """What the steps work on."""

    model: Model
    trained: Denoiser  # through the DDP/FSDP-wrapped backbone
    wrapped: torch.nn.Module
    objective: Any
    optimizer: torch.optim.Optimizer
    ema: Ema
    data: Any
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None


def _steps(run: RunSpec, ctx: WorkerContext, p: Parts, start: int, bar) -> dict[str, Any]:
    tr, device = run.train, ctx.device
    model, trained, wrapped, objective, optimizer, ema, data, scaler = (
        p.model, p.trained, p.wrapped, p.objective, p.optimizer, p.ema, p.data, p.scaler)
    micro = tr.micro_batch_size or tr.local_batch_size
    first_row = ctx.rank * tr.local_batch_size
    window_t, window_n, last = time.perf_counter(), 0, {}
    model.train()
    for step in range(start, tr.steps):
        raw = data.batch(step)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, tr.optimizer)
        total, metrics = 0.0, {}
        for m in range(tr.accumulation):
            part = {k: v[m * micro : (m + 1) * micro] for k, v in raw.items()}
            rows = slice(first_row + m * micro, first_row + (m + 1) * micro)
            loss, metrics = _micro_step(model, trained, objective, part, tr, step, rows, device, p.amp_dtype)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"{run.name}: loss is {loss.item()} in step {step + 1} (steps count from 1, as checkpoint "
                    f"names do: {ckpt.step_dir(step)} is the state before it); stopping. The last good checkpoint "
                    "stays the resume point (lower the lr, enable grad_clip or use fp32/bf16)."
                )
            with parallel.no_sync(wrapped, m < tr.accumulation - 1):
                scaler.scale(loss / tr.accumulation).backward()
            total += loss.item() / tr.accumulation
        if tr.optimizer.grad_clip is not None:
            scaler.unscale_(optimizer)
            norm = parallel.full(torch.nn.utils.clip_grad_norm_(model.denoiser.parameters(), tr.optimizer.grad_clip))
            if tr.precision != "fp16" and not torch.isfinite(norm):  # fp16: the scaler skips the step
                raise NonFiniteLossError(f"{run.name}: gradient norm is {norm.item()} in step {step + 1} "
                                         f"(after {ckpt.step_dir(step)}); stopping "
                                         "before the weights are touched. The last good checkpoint stays the resume point.")
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        ema.update(model.denoiser, step)
        objective.after_step(model.denoiser, step)

        done = step + 1
        window_n += tr.batch_size
        bar.update(1)
        is_ckpt = done % tr.checkpoint_every == 0 or done == tr.steps
        row = None
        if done % tr.log_every == 0 or is_ckpt:
            elapsed = time.perf_counter() - window_t
            row = last = {"step": done, "loss": parallel.mean_across_ranks(total),
                          **{k: parallel.mean_across_ranks(float(v)) for k, v in metrics.items()},
                          "lr": lr_at(step, tr.optimizer), "img_per_s": window_n / max(elapsed, 1e-9),
                          **data.metrics()}
            bar.set_postfix(loss=f"{last['loss']:.4f}", img_s=f"{last['img_per_s']:.0f}")
            window_t, window_n = time.perf_counter(), 0
            if not is_ckpt:
                ctx.report(last)
        for cb in ctx.callbacks:
            cb.on_step_end(done, ctx.rank, row)
        if is_ckpt:
            url = _checkpoint(run, ctx, model, ema, optimizer, done, last, data.state(), objective)
            for cb in ctx.callbacks:
                cb.on_checkpoint(done, ctx.rank, url)
    return last


def _micro_step(model, trained, objective, raw, tr, step, rows, device, amp_dtype):
    """Loss of one micro-batch: rows ``rows`` of the global batch, with their noise."""
    rng = RandomSource.for_step(tr.seed, step, tr.batch_size, rows, device)
    torch.manual_seed(derive_seed(tr.seed, "torch", step, rows.start))  # dropout: reproducible per step and rows
    raw = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in raw.items()}
    with torch.no_grad():
        x0 = raw.pop("latent") if "latent" in raw else model.encode(raw.pop("image"))
    cond = model.conditioner(raw, rng)
    extra = {k: v for k, v in raw.items() if k not in ("label", "caption")}  # e.g. reflow's noise pairs
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
    with autocast:
        return objective.loss(trained, {**extra, "x0": x0, "cond": cond}, rng, step)


def _checkpoint(run: RunSpec, ctx: WorkerContext, model: Model, ema: Ema, optimizer, step: int, metrics: dict,
                data_state: dict, objective: torch.nn.Module | None = None) -> str | None:
    # full tensors: a collective under FSDP, so every rank takes part; rank 0 writes
    weights = parallel.gather(model.trainable_state_dict())
    averaged = parallel.gather(ema.state_dict())
    opt_state = parallel.gather_optimizer(optimizer.state_dict())
    # the objective's state (theta^-) is part of every checkpoint
    obj_state = parallel.gather(objective.state_dict()) if objective is not None and objective.state_dict() else None
    if ctx.rank != 0:
        ctx.report(metrics)
        return None
    # a LoRA run's (EMA) adapter also in the layout diffusers' load_lora_weights reads
    adapter = lora_file.encode(model, averaged) if model.adapter is not None else None
    with tempfile.TemporaryDirectory(prefix="zoo-ckpt-") as tmp:
        ckpt.write(tmp, run.model_dump_json(), weights, averaged, opt_state, step, {"data": data_state},
                   objective=obj_state, adapter=adapter)
        return ctx.report(metrics, checkpoint_dir=tmp)
