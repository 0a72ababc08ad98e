"""The training loop of one worker, for every objective: a :class:`Trainer`.

``train_loop(run, ctx)`` is the per-worker function: the same code runs in-process (Ray Train's
local mode, ``workers=0``) and inside a Ray Train TorchTrainer (``jobs.ray_train``). A run is
stateless apart from the weights, the EMA, the optimizer, the objective's state (a CD target
network) and the data position: the learning rate, the EMA decay and every random draw are
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
from zoo import lora_file
from zoo.errors import NonFiniteLossError, SpecError
from zoo.loading import fit_weights
from zoo.lora import add_adapter
from zoo.resolve import base_model
from zoo.model import Model
from zoo.specs import RunSpec

AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_optimizer(params, spec) -> torch.optim.Optimizer:
    cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[spec.kind]
    return cls(params, lr=spec.lr, betas=spec.betas, eps=spec.eps, weight_decay=spec.weight_decay)


def lr_at(step: int, spec) -> float:
    """Linear warmup to lr over warmup_steps, then constant (Ho et al. 2020, appendix B)."""
    return spec.lr * min(1.0, (step + 1) / spec.warmup_steps) if spec.warmup_steps else spec.lr


def enable_grad_checkpointing(backbone: torch.nn.Module, run: RunSpec) -> None:
    """``train.grad_checkpointing: true``: the backbone recomputes its blocks' activations in the
    backward pass. A backbone that cannot is an error, not a silent no-op."""
    if not callable(getattr(backbone, "set_grad_checkpointing", None)):
        raise SpecError(f"{run.name}: train.grad_checkpointing=true, but backbone "
                        f"{run.model.backbone.kind!r} ({type(backbone).__name__}) cannot recompute activations "
                        "(it has no set_grad_checkpointing); set grad_checkpointing: false")
    backbone.set_grad_checkpointing(True)


def train_loop(run: RunSpec, ctx: WorkerContext, progress: bool = True) -> dict[str, Any]:
    """Train ``run`` on this worker to ``run.train.steps``; returns the last logged metrics."""
    return Trainer(run, ctx).fit(progress)


class Trainer:
    """One worker's run: the model and its wrapped (DDP/FSDP) backbone, the objective with its
    frozen teacher and its state (the target network theta^- of CD lives in ``objective``; it is
    checkpointed and resumed with the weights, DESIGN.md 2b), the optimizer, the EMA and the data.

    ``step(i)`` is one optimizer step, ``checkpoint(step, metrics)`` writes every piece of state,
    ``resume(url)`` reads it back; ``fit()`` runs the steps with logging and checkpoints.
    Construction follows a fixed order (weights, objective, teacher, resumed weights, wrap,
    optimizer, EMA, resumed state, data), which a resumed run repeats exactly.
    """

    def __init__(self, run: RunSpec, ctx: WorkerContext):
        self.run, self.ctx, self.tr, self.device = run, ctx, run.train, ctx.device
        tr, device = self.tr, self.device
        torch.manual_seed(derive_seed(tr.seed, "init"))  # identical initial weights on every rank
        resume = ctx.latest_checkpoint()
        # fine-tuning starts from model.weights (reflow: k-RF from (k-1)-RF); a LoRA run's checkpoints
        # hold only its adapters, so its base is read on resume too
        base = run.model.weights if resume is None or tr.lora is not None else None
        self.model = base_model(run.model, run.name, base).to(device)
        if tr.lora is not None:  # before the optimizer: only the adapters train (zoo/lora.py)
            add_adapter(self.model, tr.lora, seed=derive_seed(tr.seed, "lora"))
        if tr.grad_checkpointing:
            enable_grad_checkpointing(self.model.denoiser.backbone, run)
        self.objective = tr.objective.build().to(device)
        self.teacher = self._attach_objective()  # before any resume: theta^- exists to restore into
        c = ckpt.Checkpoint(resume) if resume is not None else None
        if c is not None:  # weights before wrapping: FSDP shards what it wraps
            fit_weights(self.model, c.tensors("model.safetensors"), c.url)
            if self.objective.state_dict():  # theta^- resumes with the run, before any sharding
                self.objective.load_state_dict(c.tensors(ckpt.OBJECTIVE))

        # the objective trains through the (DDP-wrapped or FSDP-sharded) backbone; EMA and
        # checkpoints read the plain model.denoiser, which shares its parameters
        self.wrapped = ctx.wrap(self.model.denoiser.backbone)
        parallel.shard_target(self.objective, self.wrapped)  # theta^- sharded like the student under FSDP
        self.trained = Denoiser(self.wrapped, self.model.process, self.model.denoiser.parameterization)
        self.optimizer = build_optimizer([p for p in self.model.denoiser.parameters() if p.requires_grad],
                                         tr.optimizer)
        self.ema = Ema(self.model.denoiser, tr.ema.decay, tr.ema.warmup, keys=self.model.trainable_state_dict().keys())
        self.start, data_state = self.resume(c) if c is not None else (0, None)
        self.data = open_data(tr, ctx.rank, ctx.world_size, shard=ctx.dataset_shard(), state=data_state,
                              start=self.start, counter=ctx.bad_samples)
        self.amp_dtype = AMP_DTYPES[tr.precision]
        self.scaler = torch.amp.GradScaler(device.type, enabled=tr.precision == "fp16")

    # -- the objective's teacher and target network ----------------------------------------------
    def _attach_objective(self) -> Model | None:
        """Objectives with a teacher or a target network (cd, ...) get the frozen teacher
        (resolved from ``objective.teacher`` by :func:`jobs.teacher.load_teacher`), the student to
        copy theta^- from, and the run's total steps. Returns the teacher (None without one)."""
        if not hasattr(self.objective, "attach"):
            return None
        spec, teacher = self.tr.objective, None
        if getattr(spec, "teacher", None):
            teacher = load_teacher(spec.teacher, getattr(spec, "teacher_weights", None), self.device)
        self.objective.attach(self.model.denoiser, teacher.denoiser if teacher is not None else None, self.tr.steps)
        if hasattr(self.objective, "attach_conditioner"):  # lcd: the null condition of the teacher's guidance
            self.objective.attach_conditioner(self.model.conditioner)
        self.objective.to(self.device)
        return teacher

    # -- resume and checkpoint -------------------------------------------------------------------
    def resume(self, c: ckpt.Checkpoint) -> tuple[int, dict | None]:
        """The EMA and the optimizer from checkpoint ``c`` (its weights and the objective's state
        theta^- are already loaded, before wrapping); returns (step, data position)."""
        self.ema.load_state_dict(c.tensors("ema.safetensors"))
        self.optimizer.load_state_dict(c.optimizer_state())
        parallel.place_optimizer_state(self.optimizer)
        self.ctx.event({"event": "resumed", "step": c.step, "from": c.url})
        return c.step, c.state().get("data")

    def checkpoint(self, step: int, metrics: dict[str, Any]) -> str | None:
        """Write the state after ``step`` steps (weights, EMA, optimizer, the objective's state,
        the data position) and report it with ``metrics``; returns its URL on rank 0."""
        # full tensors: a collective under FSDP, so every rank takes part; rank 0 writes
        weights = parallel.gather(self.model.trainable_state_dict())
        averaged = parallel.gather(self.ema.state_dict())
        opt_state = parallel.gather_optimizer(self.optimizer.state_dict())
        obj_state = parallel.gather(self.objective.state_dict()) if self.objective.state_dict() else None
        data_state = self.data.state()
        if self.ctx.rank != 0:
            self.ctx.report(metrics)
            return None
        # a LoRA run's (EMA) adapter also in the layout diffusers' load_lora_weights reads
        adapter = lora_file.encode(self.model, averaged) if self.model.adapter is not None else None
        with tempfile.TemporaryDirectory(prefix="zoo-ckpt-") as tmp:
            ckpt.write(tmp, self.run.model_dump_json(), weights, averaged, opt_state, step, {"data": data_state},
                       objective=obj_state, adapter=adapter)
            return self.ctx.report(metrics, checkpoint_dir=tmp)

    # -- one step --------------------------------------------------------------------------------
    def step(self, step: int) -> dict[str, Any]:
        """Optimizer step ``step`` (from 0) on this worker's rows of the global batch: micro-batches
        accumulated, the gradient norm (clipped to grad_clip when set), the optimizer, the EMA
        and the objective's target network. Returns this worker's loss, the objective's metrics
        and the global batch's pre-clip gradient norm."""
        tr, opt = self.tr, self.optimizer
        raw = self.data.batch(step)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, tr.optimizer)
        micro = tr.micro_batch_size or tr.local_batch_size
        first_row = self.ctx.rank * tr.local_batch_size
        total, metrics = 0.0, {}
        for m in range(tr.accumulation):
            part = {k: v[m * micro : (m + 1) * micro] for k, v in raw.items()}
            rows = slice(first_row + m * micro, first_row + (m + 1) * micro)
            loss, metrics = self.micro_step(part, step, rows)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"{self.run.name}: loss is {loss.item()} in step {step + 1} (steps count from 1, as checkpoint "
                    f"names do: {ckpt.step_dir(step)} is the state before it); stopping. The last good checkpoint "
                    "stays the resume point (lower the lr, enable grad_clip or use fp32/bf16)."
                )
            with parallel.no_sync(self.wrapped, m < tr.accumulation - 1):
                self.scaler.scale(loss / tr.accumulation).backward()
            total += loss.item() / tr.accumulation
        norm = self._grad_norm(step)
        self.scaler.step(opt)
        self.scaler.update()
        opt.zero_grad(set_to_none=True)
        self.ema.update(self.model.denoiser, step)
        self.objective.after_step(self.model.denoiser, step)
        return {"loss": total, "metrics": metrics, "grad_norm": norm}

    def _grad_norm(self, step: int) -> float:
        """The L2 norm of the full (all-reduced) gradient before clipping; with grad_clip, the
        gradient is clipped to it (as clip_grad_norm_ does: same norm, same scaling)."""
        params = [p for p in self.model.denoiser.parameters() if p.grad is not None]
        clip = self.tr.optimizer.grad_clip
        if clip is not None:
            self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        if clip is not None:
            torch.nn.utils.clip_grads_with_norm_(params, clip, norm)
        value = parallel.full(norm).item()
        if clip is None and self.scaler.is_enabled():  # fp16 without clipping: gradients are still scaled
            value /= self.scaler.get_scale()
        if clip is not None and self.tr.precision != "fp16" and not torch.isfinite(torch.tensor(value)):
            # fp16: the scaler skips the step
            raise NonFiniteLossError(f"{self.run.name}: gradient norm is {value} in step {step + 1} "
                                     f"(after {ckpt.step_dir(step)}); stopping "
                                     "before the weights are touched. The last good checkpoint stays the resume point.")
        return value

    def micro_step(self, raw: dict[str, Any], step: int, rows: slice) -> tuple[torch.Tensor, dict]:
        """Loss of one micro-batch: rows ``rows`` of the global batch, with their noise."""
        tr, device = self.tr, self.device
        rng = RandomSource.for_step(tr.seed, step, tr.batch_size, rows, device)
        torch.manual_seed(derive_seed(tr.seed, "torch", step, rows.start))  # dropout: reproducible per step and rows
        raw = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in raw.items()}
        with torch.no_grad():
            x0 = raw.pop("latent") if "latent" in raw else self.model.encode(raw.pop("image"))
        cond = self.model.conditioner(raw, rng)
        extra = {k: v for k, v in raw.items() if k not in ("label", "caption")}  # e.g. reflow's noise pairs
        autocast = torch.autocast(device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext()
        with autocast:
            return self.objective.loss(self.trained, {**extra, "x0": x0, "cond": cond}, rng, step)

    # -- the run ---------------------------------------------------------------------------------
    def fit(self, progress: bool = True) -> dict[str, Any]:
        """Steps from the resume point to ``train.steps``: metrics every ``log_every`` steps
        (loss, the objective's metrics, grad_norm, lr, img/s, data counters), a checkpoint every
        ``checkpoint_every`` and after the last. Returns the last logged metrics."""
        tr, ctx = self.tr, self.ctx
        for cb in ctx.callbacks:
            cb.on_train_start(self.start, ctx.rank)
        bar = ctx.progress(total=tr.steps, initial=self.start, desc=f"train {self.run.name}",
                           disable=not progress or ctx.rank != 0, mininterval=2.0)
        window_t, window_n, last = time.perf_counter(), 0, {}
        self.model.train()
        try:
            for step in range(self.start, tr.steps):
                out = self.step(step)
                done = step + 1
                window_n += tr.batch_size
                bar.update(1)
                is_ckpt = done % tr.checkpoint_every == 0 or done == tr.steps
                row = None
                if done % tr.log_every == 0 or is_ckpt:
                    elapsed = time.perf_counter() - window_t
                    row = last = {"step": done, "loss": parallel.mean_across_ranks(out["loss"]),
                                  **{k: parallel.mean_across_ranks(float(v)) for k, v in out["metrics"].items()},
                                  "grad_norm": out["grad_norm"], "lr": lr_at(step, tr.optimizer),
                                  "img_per_s": window_n / max(elapsed, 1e-9), **self.data.metrics()}
                    bar.set_postfix(loss=f"{last['loss']:.4f}", img_s=f"{last['img_per_s']:.0f}")
                    window_t, window_n = time.perf_counter(), 0
                    if not is_ckpt:
                        ctx.report(last)
                for cb in ctx.callbacks:
                    cb.on_step_end(done, ctx.rank, row)
                if is_ckpt:
                    url = self.checkpoint(done, last)
                    for cb in ctx.callbacks:
                        cb.on_checkpoint(done, ctx.rank, url)
        finally:
            self.data.close()
            bar.close()
        return last
