"""Typed serving options: what Ray Serve gets for each model (replicas, resources, autoscaling,
batching) and what each model accepts (limits). Frozen Pydantic specs, like every other spec,
so a bad option is an error naming the field, and the whole set round-trips through JSON (it is
the ``args`` of the exported Serve config).

    ServeOptions(models=[ModelOptions(model="runs/ddpm-digits-...", autoscaling={"max_replicas": 4})])
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from components.spec import Spec

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"


class ResourceOptions(Spec):
    """Ray resources reserved per replica (Serve's ``ray_actor_options``)."""

    num_cpus: float = Field(1.0, ge=0, description="CPUs per replica; fractions pack replicas onto few cores")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per replica; fractions share one GPU")
    memory: int | None = Field(None, gt=0, description="bytes of memory reserved per replica")

    def ray_actor_options(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class AutoscalingOptions(Spec):
    """Serve's ``autoscaling_config``: replicas follow the number of ongoing requests."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    initial_replicas: int | None = Field(None, ge=0)
    target_ongoing_requests: float = Field(2.0, gt=0, description="requests per replica the autoscaler aims at")
    upscale_delay_s: float = Field(30.0, ge=0, description="sustained load needed before adding replicas")
    downscale_delay_s: float = Field(600.0, ge=0, description="sustained idleness needed before removing replicas")
    metrics_interval_s: float = Field(10.0, gt=0, description="how often replicas report their load")
    look_back_period_s: float = Field(30.0, gt=0, description="window the load is averaged over")

    @model_validator(mode="after")
    def _ordered(self) -> AutoscalingOptions:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas={self.min_replicas} > max_replicas={self.max_replicas}")
        init = self.initial_replicas
        if init is not None and not self.min_replicas <= init <= self.max_replicas:
            raise ValueError(f"initial_replicas={init} is outside [{self.min_replicas}, {self.max_replicas}]")
        return self

    def autoscaling_config(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class BatchingOptions(Spec):
    """Dynamic batching (``@serve.batch``): requests that arrive within ``wait_s`` of each other
    and agree on steps/solver/guidance run as one network call of up to ``max_images`` rows.
    Sent to replicas as Serve's ``user_config``, so it can change without a restart."""

    enabled: bool = True
    max_images: int = Field(64, ge=1, description="rows of one batched network call (sum of the requests' n)")
    wait_s: float = Field(0.01, ge=0, description="how long the first request waits for others to join")


class Limits(Spec):
    """What one model accepts; a request outside them is a 4xx naming the field."""

    max_n: int = Field(16, ge=1, description="images per request")
    max_steps: int | None = Field(None, ge=1, description="solver steps; None: the chain's length (1000 if continuous)")
    solvers: list[str] | None = Field(None, description="allowed solver kinds; None: every kind the zoo has")
    sizes: list[int] | None = Field(None, description="allowed height = width; None: the model's native size")
    max_guidance: float = Field(20.0, ge=0)
    max_prompt_chars: int = Field(1000, ge=1)
    max_body_bytes: int = Field(65536, ge=256, description="request body size")
    max_nfe_rows: int = Field(
        4096, ge=1,
        description="compute budget of one request in network-evaluation rows: n x NFE (x2 with guidance); "
        "an adaptive solver's max_nfe is capped to it",
    )
    min_tolerance: float = Field(1e-6, gt=0, le=1, description="smallest rtol/atol an adaptive solver may ask for")
    timeout_s: float = Field(120.0, gt=0, description="a request not answered within it is a 504 (and its work is cancelled)")
    chunk_images: int = Field(
        4, ge=1, description="a request of more images runs as chunks of this many, one after the other, so requests "
        "that arrive meanwhile (and /readyz) are served between its chunks; the images do not change",
    )


class ModelOptions(Spec):
    """One served model: where it comes from, its route name, and how Serve runs it."""

    model: str = Field(min_length=1, description="catalog name, or a checkpoint / run folder URL (local, s3://, ...)")
    name: str | None = Field(None, pattern=NAME_PATTERN, description="route name; default: the spec's name")
    weights: str | None = Field(None, description="weights URL for a catalog name (.safetensors or checkpoint)")
    overrides: dict[str, Any] = Field(default_factory=dict, description="typed catalog overrides (catalog names only)")
    ema: bool = Field(True, description="serve the EMA weights of a checkpoint")
    replicas: int = Field(1, ge=1, description="fixed replica count when autoscaling is None")
    autoscaling: AutoscalingOptions | None = None
    resources: ResourceOptions = ResourceOptions()
    max_ongoing_requests: int = Field(64, ge=1, description="requests one replica takes at once (batching needs > 1)")
    max_queued_requests: int = Field(
        32, ge=-1, description="requests queued per caller before a 503 with Retry-After (-1: no limit)")
    batching: BatchingOptions = BatchingOptions()
    limits: Limits = Limits()
    warmup_steps: int = Field(2, ge=0, description="solver steps of the warm-up sample run before a replica is ready")
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$",
                        description="'auto' (cuda when the replica has a GPU), 'cpu', 'cuda', 'cuda:1', 'mps'")

    @model_validator(mode="after")
    def _consistent(self) -> ModelOptions:
        if self.batching.max_images < self.limits.max_n:
            raise ValueError(
                f"batching.max_images={self.batching.max_images} < limits.max_n={self.limits.max_n}: "
                "a request of max_n images must fit one network call"
            )
        return self


class IngressOptions(Spec):
    """The HTTP front (FastAPI): validation, routing to the models, encoding; no model inside."""

    replicas: int = Field(1, ge=1)
    resources: ResourceOptions = ResourceOptions(num_cpus=0.1)
    max_ongoing_requests: int = Field(256, ge=1)
    api_key_env: str | None = Field(
        "ZOO_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="environment variable (on the ingress replica's node) holding the API key; unset or empty: no key",
    )
    api_key_file: str | None = Field(
        None, description="file (on the ingress replica's node) holding the API key; wins over api_key_env when given",
    )


class ServeOptions(Spec):
    """A Serve application: one ingress, one deployment per model, each under its own route."""

    models: list[ModelOptions] = Field(min_length=1)
    app_name: str = Field("zoo", pattern=NAME_PATTERN)
    route_prefix: str = Field("/", pattern=r"^/", description="where the app is mounted on the HTTP proxy")
    ingress: IngressOptions = IngressOptions()
