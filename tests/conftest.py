"""Shared fixtures. The trained ddpm-digits run is made once per session (a few minutes on
2 CPU cores) and shared by every test that needs a trained model."""

from __future__ import annotations

import os

# OpenMP threads that sleep when they wait instead of spinning: on 2 cores shared with other
# processes (Ray workers, a loaded CI box) spinning threads made one small train step 13x slower
# (40 s vs 3 s measured); sleeping ones keep both cores' speed on an idle machine. Set before
# torch loads its OpenMP runtime; Ray workers started by the session inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# The fast tests run in two pytest workers (pytest-xdist, Makefile), each sharing the cores with
# the other: one thread each for torch, OpenMP and BLAS, in the worker and the subprocesses it
# starts (CLI runs, the import check). 3:15 -> 1:42 wall for the fast tests on 2 idle cores; with
# only torch's own thread count set, 2:13.
if "PYTEST_XDIST_WORKER" in os.environ:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

import zoo

torch.set_num_threads(max(1, torch.get_num_threads()))


@pytest.fixture(scope="session")
def trained_digits(tmp_path_factory, request) -> zoo.Run:
    """ddpm-digits exactly as the catalog has it (the 600-step recipe), on one Ray Train worker
    of the session's cluster; trained once per spec and code and kept under $ZOO_CACHE
    (tests/train_cache.py)."""
    from tests.train_cache import cached_train

    return cached_train(tmp_path_factory, "ddpm-digits", before=lambda: request.getfixturevalue("ray_cluster"))


@pytest.fixture(scope="session")
def trained_edm_digits(tmp_path_factory, request) -> zoo.Run:
    """edm-digits exactly as the catalog has it: the teacher of cd-digits and the reference of
    ict-digits (tests/test_consistency_quality.py); trained once per spec and code and kept under
    $ZOO_CACHE (tests/train_cache.py)."""
    from tests.train_cache import cached_train

    return cached_train(tmp_path_factory, "edm-digits", before=lambda: request.getfixturevalue("ray_cluster"))


@pytest.fixture(scope="session")
def trained_ldm_tiny_vae(tmp_path_factory) -> str:
    """ldm-tiny's KL-VAE fitted by its catalog recipe (autoencoder.train): the URL of its diffusers folder."""
    from jobs.autoencoder import train_autoencoder

    return train_autoencoder("ldm-tiny", output=str(tmp_path_factory.mktemp("vae")), progress=False)


@pytest.fixture(scope="session")
def trained_ldm_tiny(tmp_path_factory, trained_ldm_tiny_vae) -> zoo.Run:
    """ldm-tiny exactly as the catalog has it, on its fitted KL-VAE, in the test process (workers=0).
    model.autoencoder.weights in its spec names the VAE folder (alive for the session)."""
    out = tmp_path_factory.mktemp("runs")
    return zoo.train("ldm-tiny", output=str(out), workers=0, progress=False,
                     **{"autoencoder.weights": trained_ldm_tiny_vae})


@pytest.fixture(scope="session")
def trained_dit_tiny(tmp_path_factory) -> zoo.Run:
    """dit-tiny exactly as the catalog has it, in the test process (workers=0)."""
    return zoo.train("dit-tiny", output=str(tmp_path_factory.mktemp("runs")), workers=0, progress=False)


def tiny_overrides(**extra) -> dict:
    """A ddpm-digits small enough to train a few steps in a second, for plumbing tests. It runs
    in the test process (workers=0: Ray Train's local mode); tests of the distributed path
    set workers."""
    base = {
        "workers": 0,
        "cpus_per_worker": 1.0,
        "backbone.channels": 8,
        "backbone.channel_mult": [1, 2],
        "backbone.attention_resolutions": [8],
        "backbone.groups": 4,
        "batch_size": 16,
        "steps": 4,
        "checkpoint_every": 2,
        "log_every": 1,
        "grid_samples": 0,
        "sampling.steps": 5,
    }
    base.update(extra)
    return base


RESUME_FILES = ("model.safetensors", "ema.safetensors", "optimizer.safetensors")


def assert_bit_identical(a: str, b: str, names: tuple[str, ...] = RESUME_FILES) -> None:
    """The checkpoints at ``a`` and ``b`` (checkpoint or run folders, any fsspec URL) hold the
    same tensors, bit for bit, in each of ``names``."""
    from zoo import checkpoint as ckpt

    for name in names:
        x, y = (ckpt.Checkpoint(ckpt.resolve(url)).tensors(name) for url in (a, b))
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), f"{name}: {a} vs {b}"


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory) -> dict[str, str]:
    """Random FID Inception-v3 weights (nothing is downloaded), as .safetensors and .pth files,
    with a variance-preserving init so the random features neither vanish nor explode."""
    from safetensors.torch import save_file

    from zoo.metrics.inception import FIDInceptionV3

    folder = tmp_path_factory.mktemp("inception")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = FIDInceptionV3()
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    sd = {k: v.contiguous() for k, v in net.state_dict().items()}
    paths = {"safetensors": str(folder / "inception.safetensors"), "pth": str(folder / "inception.pth")}
    save_file(sd, paths["safetensors"])
    torch.save(sd, paths["pth"])
    return paths


# -- shared infrastructure: one real S3 API server and one local Ray cluster per session -----------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """moto's ThreadedMotoServer on 127.0.0.1 (a real S3 API over HTTP; nothing leaves the
    machine). The AWS_* variables, AWS_ENDPOINT_URL included, are set for the whole session, so
    plain ``s3://`` URLs in fsspec/s3fs, boto3 and Ray workers started afterwards reach it."""
    import os

    pytest.importorskip("moto")
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ENDPOINT_URL_S3": endpoint,
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield endpoint
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def ray_cluster(s3_server):
    """One embedded local Ray cluster for the session, the one zoo.train starts (loopback only, no
    dashboard: zoo/local_cluster.py; Ray Train's trimmed parts: jobs/ray_train.py), at a fixed 4 logical CPUs on 2
    cores, so Ray Data has CPUs beside the train workers and a run it cannot place is refused
    rather than restarting it. Started after the S3 server so its workers inherit the endpoint;
    shut down at the end if this fixture started it."""
    ray = pytest.importorskip("ray")
    from zoo import local_cluster

    started = not ray.is_initialized()
    if started:
        local_cluster.start(4, resize=False, log_to_driver=False)
    yield ray
    if started:
        local_cluster.shutdown()


@pytest.fixture(scope="session")
def serve_instance(ray_cluster):
    """Ray Serve's controller and HTTP proxy on the session's cluster (127.0.0.1, a free port),
    started once: each serving test file deploys its applications and deletes them (starting
    and stopping Serve takes about 5 s each time). Shut down at the end of the session."""
    from ray import serve as ray_serve

    from tests.serve_support import start_serve

    start_serve()
    yield
    ray_serve.shutdown()


@pytest.fixture()
def one_thread():
    """Run a test single-threaded: the closed-form tests are thousands of small tensor ops, which
    intra-op threads only slow down (badly so on a loaded machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def lpips_weights(tmp_path_factory):
    """Random LPIPS weights written as the files a user gives (nothing is downloaded): for a trunk
    ("vgg" / "alex"), {"weights": linear layers, "backbone": torchvision-layout trunk, "net": the
    lpips.LPIPS module they came from}, as .safetensors."""
    lpips = pytest.importorskip("lpips")
    import re
    import warnings

    from safetensors.torch import save_file

    made: dict[str, dict] = {}

    def make(net: str = "alex") -> dict:
        if net not in made:
            folder = tmp_path_factory.mktemp(f"lpips-{net}")
            with warnings.catch_warnings(), torch.device("meta"):  # no init of torchvision's classifier
                warnings.simplefilter("ignore")
                module = lpips.LPIPS(pretrained=False, pnet_rand=True, net=net, verbose=False)
            gen = torch.Generator().manual_seed(0)
            real = {}
            for k, v in module.state_dict().items():  # He-initialized trunk, non-negative lins (as LPIPS' are)
                if v.is_meta and not k.startswith("lins."):
                    fan_in = v[0].numel() if v.ndim > 1 else 1
                    w = torch.randn(v.shape, generator=gen) * (2 / fan_in) ** 0.5 * (v.ndim > 1 or 0.1)
                    real[k] = w.abs() if k.startswith("lin") else w
            module.load_state_dict(real, strict=False, assign=True)
            sd = module.state_dict()
            assert not any(v.is_meta for v in sd.values())
            trunk = {re.sub(r"^net\.slice\d+\.", "features.", k): v.contiguous() for k, v in sd.items() if k.startswith("net.")}
            lins = {k: v.contiguous() for k, v in sd.items() if k.startswith("lin") and not k.startswith("lins.")}
            paths = {"weights": str(folder / f"{net}_lin.safetensors"), "backbone": str(folder / f"{net}.safetensors")}
            save_file(lins, paths["weights"])
            save_file(trunk, paths["backbone"])
            made[net] = {**paths, "net": module}
        return made[net]

    return make
