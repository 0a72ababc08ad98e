"""The HTTP API's bodies (they make the OpenAPI schema at /openapi.json).

A request is validated strictly (no "3" for 3, no unknown fields): a wrong type or name is a 422
whose ``errors`` name each bad field. Limits that depend on the model (max n, steps, solvers,
sizes, label range) are checked next, by serve/limits.py, with the same error shape.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_SEED = 2**63 - 1


class GenerateRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"n": 4, "steps": 20, "seed": 0, "format": "base64"}, {"label": 3, "n": 1, "guidance": 2.0}]},
    )

    prompt: str | None = Field(None, description="text prompt, for text-conditioned models")
    label: int | None = Field(None, ge=0, description="class label, for class-conditional models (none: unconditional)")
    n: int = Field(1, ge=1, description="number of images")
    steps: int | None = Field(None, ge=1, description="solver steps (default: the model's)")
    solver: str | dict[str, Any] | None = Field(
        None, description="solver kind ('ddim') or a solver spec ({'kind': 'ddim', 'eta': 0.5}); default: the model's"
    )
    guidance: float | None = Field(None, ge=0, description="classifier-free guidance w: eps~ = (1 + w) eps(c) - w eps(null)")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="same seed, same images; none: a random seed, returned")
    height: int | None = Field(None, ge=1, description="image height, where the model allows more than its native size")
    width: int | None = Field(None, ge=1, description="image width, where the model allows more than its native size")
    format: Literal["png", "base64", "npy"] = Field(
        "png",
        description="png: one image/png (a grid when n > 1); base64: JSON with one base64 PNG per image; "
        "npy: float32 array (n, C, H, W) in [0, 1] as application/x-npy",
    )


class FieldError(BaseModel):
    field: str | None = Field(description="the offending field (dotted path), or null for the body as a whole")
    message: str


class ErrorBody(BaseModel):
    detail: str = Field(description="what went wrong, naming the field or the model")
    errors: list[FieldError] = Field(default_factory=list)


class ModelLimits(BaseModel):
    max_n: int
    max_steps: int
    solvers: list[str]
    sizes: list[int]
    max_guidance: float
    max_prompt_chars: int
    max_body_bytes: int
    max_nfe_rows: int = Field(description="compute budget of one request: n x NFE (x2 with guidance) at most this")
    min_tolerance: float = Field(description="smallest rtol/atol of an adaptive solver")
    timeout_s: float = Field(description="a request is answered within it or gets a 504")
    chunk_images: int = Field(description="larger requests run in chunks of this many images")


class ModelInfo(BaseModel):
    name: str
    generate: str = Field(description="path of this model's generate route")
    conditioning: Literal["none", "label", "prompt"]
    num_classes: int | None = None
    guidance: bool = Field(description="whether classifier-free guidance applies")
    height: int
    width: int
    channels: int
    default_steps: int
    default_solver: dict[str, Any]
    default_guidance: float
    compare_steps: list[int] = Field(
        default_factory=list,
        description="step counts the web page shows side by side for one seed: 1, 2 and 4 for a few-step "
        "(consistency / LCM) solver, none otherwise",
    )
    limits: ModelLimits
    spec_sha256: str = Field(description="hash of the ModelSpec served (the one that trained it)")
    spec: dict[str, Any] | None = Field(None, description="the full ModelSpec (GET /v1/models/{name})")


class ModelList(BaseModel):
    models: list[ModelInfo]


class BatchInfo(BaseModel):
    requests: int = Field(description="requests in the network call that made these images")
    images: int = Field(description="rows of that network call")


class GenerateResponse(BaseModel):
    model: str
    media_type: Literal["image/png"] = "image/png"
    images: list[str] = Field(description="one base64-encoded PNG per image")
    n: int
    height: int
    width: int
    channels: int
    seed: int
    steps: int
    solver: dict[str, Any]
    guidance: float
    label: int | None = None
    prompt: str | None = None
    batch: BatchInfo
    replica: str
    elapsed_s: float = Field(description="time in the replica: queueing for a batch and the network call")
