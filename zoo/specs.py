"""ModelSpec, TrainSpec and RunSpec: what a model is, how it is trained, and the two together.

A ModelSpec is everything needed to build, sample and serve a model; a TrainSpec everything
needed to train it. A RunSpec (a catalog entry) holds both. All are frozen Pydantic v2 models
with extra="forbid" whose component fields are discriminated unions keyed by ``kind``; they
round-trip through JSON losslessly, and ``RunSpec.hash()`` names a run's artifacts.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import Field, model_validator

from components.autoencoders import AutoencoderSpec
from components.backbones import BackboneSpec
from components.conditioners import ConditionerSpec
from components.denoisers import DenoiserSpec
from components.grids import GridSpec
from components.noise import NoiseSpec
from components.objectives import ObjectiveSpec
from components.solvers import SolverSpec
from components.spec import Spec
from zoo.lora import LoraSpec


class ImageSpec(Spec):
    size: int = Field(gt=0, description="height = width of the images, in pixels")
    channels: int = Field(gt=0)


class SamplingSpec(Spec):
    """The model's default way to sample; every field can be changed per call."""

    solver: SolverSpec
    grid: GridSpec
    steps: int = Field(gt=0)
    guidance: float = Field(0.0, ge=0, description="w of eps~ = (1+w) eps(c) - w eps(null)")
    clip_x0: float | None = Field(None, gt=0, description="clamp x0_hat to [-c, c] (pixel models)")


class ModelSpec(Spec):
    image: ImageSpec
    autoencoder: AutoencoderSpec
    backbone: BackboneSpec
    process: NoiseSpec
    denoiser: DenoiserSpec
    conditioner: ConditionerSpec
    sampling: SamplingSpec
    weights: str | None = Field(None, description="URL of trained weights (safetensors), any fsspec URL")

    @property
    def guidance_input(self) -> bool:
        """Whether w is an input of the network (an LCM's guidance embedding, DESIGN.md 2b) rather
        than classifier-free guidance: the backbone spec's trait, False where it has none."""
        return bool(getattr(self.backbone, "guidance_input", False))

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        ae, bb = self.autoencoder, self.backbone
        if ae.channels != self.image.channels:
            raise ValueError(f"autoencoder.channels={ae.channels} but image.channels={self.image.channels}")
        latent_c, latent_size = ae.latent_shape(self.image.size)[:2]
        if bb.in_channels != latent_c:
            raise ValueError(f"backbone.in_channels={bb.in_channels} but the autoencoder gives {latent_c} channels")
        if bb.out_channels != latent_c:
            raise ValueError(f"backbone.out_channels={bb.out_channels} but the denoiser needs {latent_c} channels")
        if bb.resolution != latent_size:
            raise ValueError(f"backbone.resolution={bb.resolution} but the autoencoder gives {latent_size}x{latent_size}")
        n_cls, bb_cls = getattr(self.conditioner, "num_classes", None), getattr(bb, "num_classes", None)
        if n_cls != bb_cls:
            raise ValueError(f"conditioner has num_classes={n_cls} but backbone.num_classes={bb_cls}")
        text, bb_text = getattr(self.conditioner, "hidden_size", None), getattr(bb, "cross_attention_dim", None)
        if text != bb_text:
            if text is None:
                raise ValueError(f"backbone.cross_attention_dim={bb_text} needs a text conditioner (clip_text); "
                                 f"the conditioner is {self.conditioner.kind}")
            raise ValueError(f"conditioner.hidden_size={text} but backbone.cross_attention_dim={bb_text}")
        if self.sampling.guidance and self.conditioner.kind == "unconditional":
            raise ValueError("sampling.guidance needs a conditioner; this model is unconditional")
        return self


class OptimizerSpec(Spec):
    kind: Literal["adamw", "adam"] = "adamw"
    lr: float = Field(gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0, description="linear learning-rate warmup")
    grad_clip: float | None = Field(1.0, gt=0, description="max global gradient norm")


class EmaSpec(Spec):
    decay: float = Field(0.9999, ge=0, lt=1)
    warmup: bool = Field(True, description="decay_t = min(decay, (1 + t) / (10 + t))")


class TrainSpec(Spec):
    data: str | None = Field(None, description="builtin:digits, or a URL of data shards")
    objective: ObjectiveSpec
    batch_size: int = Field(gt=0, description="global batch, kept constant whatever the worker count")
    steps: int = Field(gt=0)
    optimizer: OptimizerSpec
    ema: EmaSpec
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    seed: int = Field(0, ge=0)
    hflip: bool = Field(False, description="random horizontal flips")
    checkpoint_every: int = Field(gt=0)
    keep_checkpoints: int = Field(3, ge=1)
    log_every: int = Field(50, gt=0)
    grid_samples: int = Field(64, ge=0, description="samples in the grid written after training")
    grad_checkpointing: bool = False
    lora: LoraSpec | None = Field(
        None, description="train only low-rank adapters on the backbone (zoo/lora.py), from the base model.weights")
    micro_batch_size: int | None = Field(
        None, gt=0, description="rows per forward/backward on one worker: the per-worker batch "
        "(batch_size / workers) is accumulated from micro-batches of this size; None: one micro-batch")
    parallelism: Literal["ddp", "fsdp"] = Field("ddp", description="replicate (DDP) or shard (FSDP) the backbone")
    workers: int = Field(1, ge=0, description="Ray Train workers; 0 runs the loop in the calling process (Ray Train's local mode)")
    cpus_per_worker: float = Field(1.0, gt=0, description="logical CPUs per worker; also its torch thread count")
    gpus_per_worker: float = Field(0.0, ge=0)
    max_failures: int = Field(0, ge=-1, description="worker-group restarts from the last complete checkpoint (-1: unlimited)")
    on_bad_sample: Literal["error", "skip"] = Field(
        "error", description="a sample that does not decode: stop with an error naming its shard, or skip and count it")
    shuffle_buffer: int = Field(1000, ge=0, description="rows in each worker's shuffle buffer when streaming shards")
    nice: int = Field(0, ge=0, le=19, description="scheduling niceness of the train workers (0: normal "
                      "priority, 19: lowest; Ray's own default is 15). A worker can raise its level but lowering "
                      "one that a cluster started higher needs CAP_SYS_NICE. workers=0 leaves the caller's alone")
    output: str = Field("runs", description="where runs are written: a path or any fsspec URL")

    @property
    def local_batch_size(self) -> int:
        """Rows one worker takes of each global batch."""
        return self.batch_size // max(1, self.workers)

    @property
    def accumulation(self) -> int:
        """Micro-batches accumulated into one optimizer step on one worker."""
        return self.local_batch_size // (self.micro_batch_size or self.local_batch_size)

    @model_validator(mode="after")
    def _divisible(self) -> TrainSpec:
        if self.batch_size % max(1, self.workers):
            raise ValueError(f"batch_size={self.batch_size} is not divisible by workers={self.workers}")
        if self.micro_batch_size and self.local_batch_size % self.micro_batch_size:
            raise ValueError(
                f"micro_batch_size={self.micro_batch_size} does not divide the per-worker batch "
                f"{self.local_batch_size} (batch_size={self.batch_size} / workers={self.workers})")
        return self


EXECUTION_ONLY = ("output", "max_failures", "nice")


class RunSpec(Spec):
    name: str = Field(min_length=1)
    description: str = ""
    reference: str = Field("", description="the paper or code the entry reproduces")
    model: ModelSpec
    train: TrainSpec

    def hash(self) -> str:
        """A stable content hash of what is trained (model + train), for naming artifacts. Where
        the run is written, how often a failed run may restart and the workers' nice level do not
        change what is trained, so they are left out (``zoo train --resume latest max_failures=3`` finds the run)."""
        body = self.model_dump(mode="json", include={"model", "train"})
        for key in EXECUTION_ONLY:
            body["train"].pop(key)
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]

    @model_validator(mode="after")
    def _samples_as_trained(self) -> RunSpec:
        """An objective that trains the model for one way of sampling (pd: N DDIM steps on its
        grid) says so with ``check_sampling``; the entry's sampling must be that way."""
        check = getattr(self.train.objective, "check_sampling", None)
        if check is not None:
            check(self.model.process.build(), self.model.sampling)
        return self
