"""The HTTP front of the application (FastAPI, OpenAPI at /openapi.json, docs at /docs).

    GET  /                              the web page
    GET  /healthz                       liveness: the ingress answers
    GET  /readyz                        readiness: every model has a replica that answers (else 503)
    GET  /v1/models                     what is served, with each model's limits
    GET  /v1/models/{name}              one model, with the full ModelSpec it serves
    POST /v1/models/{name}/generate     images (png | base64 | npy)

The ingress validates everything (body size, JSON, fields, the model's limits) before a request
reaches a model replica: a bad request is a 4xx naming the field and costs the model nothing.
"""

# no `from __future__ import annotations`: FastAPI must see Request etc. as real classes on the
# methods Serve rewrites for the class-based ingress.
import asyncio
import difflib
import hmac
import json
import os
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import ValidationError
from ray import serve as ray_serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from serve import encoding, page
from serve.batching import Job, Outcome
from serve.limits import ModelRules, RequestError
from serve.options import IngressOptions
from serve.schemas import (
    BatchInfo, ErrorBody, FieldError, GenerateRequest, GenerateResponse, ModelInfo, ModelList,
)

api = FastAPI(
    title="diffusion-zoo",
    description="Catalog diffusion models served from the spec that trained them.",
    version="1",
)

_ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 404, 413, 422, 500, 503, 504)}
_GENERATE_BODY = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": GenerateRequest.model_json_schema()}}}
}
_IMAGES = {200: {"model": GenerateResponse, "content": {"image/png": {}, encoding.NPY: {}},
                 "description": "image/png for format=png, application/x-npy for npy, JSON for base64"}}


class Failure(Exception):
    def __init__(self, status: int, detail: str, errors: list[FieldError] | None = None, headers: dict | None = None):
        self.status, self.detail, self.errors, self.headers = status, detail, errors or [], headers
        super().__init__(detail)


@api.exception_handler(Failure)
async def _failure(request: Request, exc: Failure) -> JSONResponse:
    body = ErrorBody(detail=exc.detail, errors=exc.errors).model_dump()
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)


# Helpers come before the class: Serve pickles the decorated class by value when it is
# decorated, capturing only the module globals that exist at that moment.
async def _json_body(request: Request, limit: int) -> object:
    """The body parsed as JSON, or 413 past ``limit`` bytes (read no further) / 400 if not JSON."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Failure(413, f"request body is {declared} bytes; the limit is {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Failure(413, f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return parse_json(b"".join(chunks))


MAX_JSON_DEPTH = 32  # a generate body is 3 deep; anything much deeper is not one


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number (numbers must be finite)")


def parse_json(raw: bytes) -> object:
    """A request body as JSON, or a 400 naming the problem: not JSON, not UTF-8, Infinity/NaN,
    an integer past Python's 4300-digit limit, nesting deeper than MAX_JSON_DEPTH (checked
    before parsing, so a 30000-deep body never reaches the recursive parser)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:  # bracket depth outside strings
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                raise Failure(400, f"request body is nested deeper than {MAX_JSON_DEPTH} levels",
                              [FieldError(field=None, message=f"JSON nesting deeper than {MAX_JSON_DEPTH}")])
        elif byte in (0x5D, 0x7D):
            depth -= 1
    try:
        return json.loads(raw, parse_constant=_no_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise Failure(400, f"request body is not valid JSON: {e}", [FieldError(field=None, message=str(e))]) from None
    except (ValueError, RecursionError) as e:  # Infinity/NaN, an int of more than 4300 digits
        msg = str(e) if not isinstance(e, RecursionError) else "JSON nested too deeply"
        raise Failure(400, f"request body is not valid JSON: {msg[:200]}", [FieldError(field=None, message=msg[:200])]) from None


def api_key(opts: IngressOptions | None) -> bytes | None:
    """The API key from the options' file, else their environment variable; None: no key.
    Read on the ingress replica (the key never travels in the Serve config)."""
    if opts is None:
        return None
    if opts.api_key_file:
        try:
            key = Path(opts.api_key_file).read_text().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise RuntimeError(f"ingress.api_key_file={opts.api_key_file!r}: cannot read the API key ({type(e).__name__})") from None
        if not key:
            raise RuntimeError(f"ingress.api_key_file={opts.api_key_file!r} is empty")
        return key.encode()
    key = os.environ.get(opts.api_key_env or "", "").strip() if opts.api_key_env else ""
    return key.encode() or None


def authorize(authorization: str | None, key: bytes | None) -> None:
    """With a key set, the request must carry ``Authorization: Bearer <key>`` (compared in
    constant time), else 401."""
    if key is None:
        return
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key):
        raise Failure(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                      headers={"WWW-Authenticate": 'Bearer realm="diffusion-zoo"'})


def with_limits(schema: dict, rules: dict[str, ModelRules]) -> dict:
    """The OpenAPI schema with each served model's limits: the generate operation lists them in
    its description and as ``x-zoo-models`` (name -> limits), and ``{name}`` is an enum of the
    served names, so a generated client knows the bounds a schema-valid body must also meet."""
    schema = json.loads(json.dumps(schema))
    op = schema["paths"]["/v1/models/{name}/generate"]["post"]
    limits = {name: r.limits.model_dump() for name, r in rules.items()}
    op["x-zoo-models"] = limits
    lines = [f"- `{name}`: n <= {lim['max_n']}, steps <= {lim['max_steps']}, n x NFE (x2 with guidance) <= "
             f"{lim['max_nfe_rows']}, solvers {', '.join(lim['solvers'])}, guidance <= {lim['max_guidance']}, "
             f"rtol/atol >= {lim['min_tolerance']:g}, timeout {lim['timeout_s']:g} s" for name, lim in limits.items()]
    op["description"] = "Per-model limits (a body outside them is a 422 naming the field):\n" + "\n".join(lines)
    for param in op.get("parameters", []):
        if param.get("name") == "name":
            param["schema"] = {**param.get("schema", {}), "enum": sorted(rules)}
    return schema


def _validate(body: object) -> GenerateRequest:
    if not isinstance(body, dict):
        raise Failure(422, f"request body must be a JSON object, got {type(body).__name__}")
    try:
        return GenerateRequest.model_validate(body, strict=True)
    except ValidationError as e:
        errors = []
        for err in e.errors():
            field = ".".join(str(p) for p in err["loc"]) or None
            msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
            errors.append(FieldError(field=field, message=f"{msg} (got {err['input']!r:.80})"))
        shown = "; ".join(f"{x.field}: {x.message}" for x in errors)
        raise Failure(422, f"invalid request: {shown}", errors) from None


def _respond(name: str, req: GenerateRequest, job: Job, out: Outcome, rules: ModelRules) -> Response:
    images = out.images
    n, c, h, w = images.shape
    if req.format == "base64":
        body = GenerateResponse(
            model=name, images=encoding.base64_pngs(images), n=n, height=h, width=w, channels=c, seed=job.seed,
            steps=job.steps, solver=json.loads(job.solver), guidance=job.guidance, label=job.label, prompt=job.prompt,
            batch=BatchInfo(requests=out.batch_requests, images=out.batch_images), replica=out.replica,
            elapsed_s=round(out.elapsed_s, 4),
        )
        return JSONResponse(body.model_dump())
    headers = {
        "X-Zoo-Model": name, "X-Zoo-Seed": str(job.seed), "X-Zoo-Steps": str(job.steps),
        "X-Zoo-Batch-Requests": str(out.batch_requests), "X-Zoo-Batch-Images": str(out.batch_images),
        "X-Zoo-Replica": out.replica, "X-Zoo-Elapsed-S": f"{out.elapsed_s:.4f}",
    }
    if req.format == "npy":
        return Response(encoding.npy(images), media_type=encoding.NPY, headers=headers)
    return Response(encoding.png_grid(images), media_type="image/png", headers=headers)


@ray_serve.ingress(api)
class Ingress:
    def __init__(self, rules: dict[str, ModelRules], models: dict[str, DeploymentHandle], options: IngressOptions | None = None):
        self.rules, self.models = rules, models
        self.key = api_key(options)
        api.openapi_schema = with_limits(api.openapi(), rules)

    # -- pages and probes ---------------------------------------------------------------------
    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index(self, request: Request) -> HTMLResponse:
        return HTMLResponse(page.render(request.scope.get("root_path", "")))

    @api.get("/healthz", summary="Liveness")
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @api.get("/readyz", summary="Readiness: every model answers", responses={503: {"description": "a model is not ready"}})
    async def readyz(self) -> JSONResponse:
        async def ask(name: str) -> dict:
            try:
                return {"ready": True, **await asyncio.wait_for(self.models[name].ready.remote(), 10)}
            except Exception as e:  # noqa: BLE001 - any failure means not ready
                return {"ready": False, "error": f"{type(e).__name__}: {e}"[:300]}

        states = dict(zip(self.rules, await asyncio.gather(*(ask(n) for n in self.rules))))
        ok = all(s["ready"] for s in states.values())
        return JSONResponse({"ready": ok, "models": states}, status_code=200 if ok else 503)

    # -- models ---------------------------------------------------------------------------------
    @api.get("/v1/models", response_model=ModelList, summary="Served models and their limits")
    async def list_models(self, request: Request) -> ModelList:
        authorize(request.headers.get("authorization"), self.key)
        return ModelList(models=[self._info(r, request) for r in self.rules.values()])

    @api.get("/v1/models/{name}", response_model=ModelInfo, responses={404: _ERRORS[404]}, summary="One model, with its spec")
    async def get_model(self, name: str, request: Request) -> ModelInfo:
        authorize(request.headers.get("authorization"), self.key)
        return self._info(self._find(name), request, full=True)

    @api.post("/v1/models/{name}/generate", summary="Generate images", responses={**_IMAGES, **_ERRORS},
              openapi_extra=_GENERATE_BODY)
    async def generate(self, name: str, request: Request) -> Response:
        authorize(request.headers.get("authorization"), self.key)
        rules = self._find(name)
        req = _validate(await _json_body(request, rules.limits.max_body_bytes))
        try:
            job = rules.check(req)
        except RequestError as e:
            raise Failure(e.status, f"invalid request for model {name!r}: {e}", e.errors) from None
        running = []
        try:
            out: Outcome = await asyncio.wait_for(self._chunked(name, job, rules.limits.chunk_images, running),
                                                  rules.limits.timeout_s)
        except asyncio.TimeoutError:
            for response in running:  # no further chunk starts; the running one is cancelled
                response.cancel()
            raise Failure(504, f"model {name!r} did not answer within timeout_s={rules.limits.timeout_s:g} s; "
                               "the request was cancelled (ask for fewer images or steps, or retry later)",
                          headers={"Retry-After": "5"}) from None
        except asyncio.CancelledError:  # the client has gone: stop its work too
            for response in running:
                response.cancel()
            raise
        except BackPressureError:
            raise Failure(503, f"model {name!r} is busy: its request queue is full; retry later",
                          headers={"Retry-After": "1"}) from None
        except Exception as e:  # noqa: BLE001 - replica gone, ...: the model is unavailable
            raise Failure(503, f"model {name!r} is unavailable: {type(e).__name__}: {str(e)[:300]}",
                          headers={"Retry-After": "1"}) from None
        if out.error is not None:
            if out.status == 503:  # the replica is not ready (load or warm-up failed): say why
                raise Failure(503, f"model {name!r} is not ready: {out.error[:500]}", headers={"Retry-After": "30"})
            raise Failure(500, f"model {name!r} failed on this request: {out.error[:500]}")
        return _respond(name, req, job, out, rules)

    # -- helpers --------------------------------------------------------------------------------
    async def _chunked(self, name: str, job: Job, size: int, running: list) -> Outcome:
        """The job's chunks one after the other (requests that arrive meanwhile are served
        between them), joined into one Outcome; the first error ends it."""
        parts: list[Outcome] = []
        for chunk in job.chunks(size):
            response = self.models[name].generate.remote(chunk)
            running[:] = [response]
            out = await response
            if out.error is not None:
                return out
            parts.append(out)
        if len(parts) == 1:
            return parts[0]
        import numpy as np

        return Outcome(np.concatenate([p.images for p in parts]), max(p.batch_requests for p in parts),
                       max(p.batch_images for p in parts), sum(p.elapsed_s for p in parts), replica=parts[-1].replica)

    def _find(self, name: str) -> ModelRules:
        if name not in self.rules:
            close = difflib.get_close_matches(name, list(self.rules), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise Failure(404, f"unknown model {name!r}{hint} (served: {', '.join(self.rules)})",
                          [FieldError(field="name", message=f"no model {name!r} is served")])
        return self.rules[name]

    def _info(self, rules: ModelRules, request: Request, full: bool = False) -> ModelInfo:
        root = request.scope.get("root_path", "").rstrip("/")
        return rules.info(f"{root}/v1/models/{rules.name}/generate", full)
