"""Time grids, separate from solvers: (process, steps) -> steps+1 decreasing times ending at 0.
kind = file stem; quadratic, Karras rho=7, log-SNR uniform, leading/trailing join the union."""

from components.grids.uniform import Uniform, UniformSpec

GridSpec = UniformSpec

__all__ = ["GridSpec", "Uniform", "UniformSpec"]
