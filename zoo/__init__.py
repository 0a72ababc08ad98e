"""diffusion-zoo: a declarative, distributed, config-free model zoo for diffusion models.

    import zoo
    zoo.list("ddpm-*")
    run = zoo.train("ddpm-digits")                 # minutes on a CPU, on the shipped digits
    fast = zoo.distill(run.dir, into="pd", rounds=2)  # a 4-step student (cd, ict: consistency models)
    model = zoo.load(run.checkpoint)
    images = model.sample(16, steps=50, solver="ddim", seed=0)
    zoo.save_grid(images, "grid.png")
    served = zoo.serve(run.checkpoint)             # Ray Serve app; zoo.client(served.url).generate(n=4)
    print(zoo.evaluate(model, metric="digits_fid", nfe=[1, 2, 4, 8], solvers=["ddim", "ddpm"]))
"""

from zoo.catalog import describe, get
from zoo.catalog import names as list  # noqa: A001  (zoo.list mirrors `zoo list`)
from zoo.evaluation import Evaluation, evaluate
from zoo.errors import CheckpointError, DataError, NonFiniteLossError, SpecError, UnknownModelError, ZooError
from zoo.images import save_grid
from zoo.loading import build, load
from zoo.model import Model
from zoo.pairs import flow_pairs
from zoo.run import Run
from zoo.specs import ModelSpec, RunSpec, TrainSpec


def __getattr__(name: str):
    """The layers above the core (jobs, serve), loaded on first use: every jobs/serve module imports
    core modules (zoo.specs, ...), which runs this file first, so importing them here eagerly
    would import jobs while jobs is being imported. The facade is the one module that imports
    every layer."""
    if name == "train":
        from jobs.train import train as found
    elif name == "distill":
        from jobs.distill import distill as found
    elif name == "train_autoencoder":
        from jobs.autoencoder import train_autoencoder as found
    elif name == "reflow":
        from jobs.reflow import reflow as found
    elif name == "write_pairs":
        from jobs.reflow import write_pairs as found
    elif name == "submit":
        from jobs.submit import submit as found  # Ray job submission; ray is imported on use
    elif name == "serve":
        from serve.api import serve as found  # Ray is imported only when serving
    elif name == "client":
        from serve.api import client as found
    else:
        raise AttributeError(f"module 'zoo' has no attribute {name!r}")
    return found


__all__ = [
    "CheckpointError", "DataError", "Evaluation", "Model", "ModelSpec", "NonFiniteLossError", "Run",
    "RunSpec", "SpecError", "TrainSpec", "UnknownModelError", "ZooError", "build", "client", "describe",
    "distill", "evaluate", "flow_pairs", "get", "list", "load", "reflow", "save_grid", "serve", "submit", "train", "train_autoencoder",
    "write_pairs",
]
