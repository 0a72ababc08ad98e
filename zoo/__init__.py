"""diffusion-zoo: a declarative, distributed, config-free model zoo for diffusion models.

    import zoo
    zoo.list("ddpm-*")
    run = zoo.train("ddpm-digits")                 # minutes on a CPU, on the shipped digits
    model = zoo.load(run.checkpoint)
    images = model.sample(16, steps=50, solver="ddim", seed=0)
    zoo.save_grid(images, "grid.png")
"""

from zoo.catalog import describe, get
from zoo.catalog import names as list  # noqa: A001  (zoo.list mirrors `zoo list`)
from zoo.errors import CheckpointError, DataError, NonFiniteLossError, SpecError, UnknownModelError, ZooError
from zoo.images import save_grid
from zoo.loading import build, load
from zoo.model import Model
from zoo.reflow import flow_pairs, reflow, write_pairs
from zoo.run import Run, train
from zoo.specs import ModelSpec, RunSpec, TrainSpec

__all__ = [
    "CheckpointError", "DataError", "Model", "ModelSpec", "NonFiniteLossError", "Run", "RunSpec",
    "SpecError", "TrainSpec", "UnknownModelError", "ZooError", "build", "describe", "get", "list",
    "load", "save_grid", "train", "flow_pairs", "reflow", "write_pairs",
]
