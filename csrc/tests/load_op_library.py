"""ctest: load the CMake-built op library into torch and run an op against the reference.

The schemas are defined by concrete_ext._ops (Python); the library registers the CPU kernels.
Run with the library path as the only argument, from the repository root.
"""

import sys

import torch

lib = sys.argv[1]
sys.modules["concrete_ext._C"] = None  # use the CMake library, not the setup.py module
import concrete_ext  # noqa: E402  (defines the schemas, falls back to reference kernels)

torch.ops.load_library(lib)  # overrides the CPU kernels with the compiled ones
x = torch.randn(5, 7, dtype=torch.float64)
t = torch.tensor(0.5, dtype=torch.float64)
got = torch.ops.concrete_ext.exp_concrete_sample(x, t, -1, 123, 0, None)
want = concrete_ext.reference.exp_concrete_sample(x, 0.5, -1, seed=123)
err = (got - want).abs().max().item()
print(f"{lib}: max |cmake op - reference| = {err:.3g}")
sys.exit(0 if err < 1e-12 else 1)
