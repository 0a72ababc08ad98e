"""Components of the zoo: one file per kind, one discriminated union per component type.

Every component meets the others at the contract of DESIGN.md section 2:
x_t = alpha(t) x0 + sigma(t) eps, and the denoiser's prediction.
"""
