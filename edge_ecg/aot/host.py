"""Build the generated C as a host shared library and call it through ctypes."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np

CFLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC")


def build_shared_library(c_dir: str | Path, out_path: str | Path, *, cc: str = "gcc") -> Path:
    """Compile every ``*.c`` in ``c_dir`` into the shared library ``out_path`` with
    ``gcc -std=c99 -O2 -Wall -Wextra -Werror -shared -fPIC``.

    Raises:
        FileNotFoundError: no C files in ``c_dir``, or no compiler.
        RuntimeError: the compiler failed (its messages are in the error).
    """
    c_dir, out_path = Path(c_dir), Path(out_path)
    sources = sorted(c_dir.glob("*.c"))
    if not sources:
        raise FileNotFoundError(f"no .c files in {c_dir}")
    if shutil.which(cc) is None:
        raise FileNotFoundError(f"C compiler {cc!r} not found")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [cc, *CFLAGS, f"-I{c_dir}", "-o", str(out_path), *map(str, sources)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"compiling {c_dir} failed ({' '.join(cmd)}):\n{result.stdout}{result.stderr}"
        )
    return out_path


class AotModel:
    """A generated model loaded from a shared library built by :func:`build_shared_library`.

    ``prefix`` is the one given to :func:`edge_ecg.aot.generate`.
    """

    def __init__(self, path: str | Path, *, prefix: str = "ecg_model"):
        self.path = Path(path)
        # A private handle, so libraries of the same name in different folders don't clash.
        self._lib = ctypes.CDLL(str(self.path.resolve()), mode=ctypes.RTLD_LOCAL)
        self._invoke = getattr(self._lib, f"{prefix}_invoke")
        self._invoke.argtypes = (ctypes.c_void_p, ctypes.c_void_p)
        self._invoke.restype = ctypes.c_int
        self._input = getattr(self._lib, f"{prefix}_input")
        self._input.argtypes = ()
        self._input.restype = ctypes.c_void_p
        self.input_shape = self._shape(prefix, "input")
        self.output_shape = self._shape(prefix, "output")
        self.input_size = int(np.prod(self.input_shape))
        self.output_size = int(np.prod(self.output_shape))

    def _shape(self, prefix: str, which: str) -> tuple[int, ...]:
        rank = ctypes.c_int32.in_dll(self._lib, f"{prefix}_{which}_rank").value
        dims = (ctypes.c_int32 * rank).in_dll(self._lib, f"{prefix}_{which}_shape")
        return tuple(int(d) for d in dims)

    def invoke(self, x: np.ndarray, *, in_place: bool = True) -> np.ndarray:
        """Run the model on int8 ``x`` (any shape holding the input's size).

        ``in_place``: write ``x`` into the model's input tensor (``<prefix>_input()``,
        inside the activation buffer) and invoke on it, as a device does; otherwise
        pass ``x``'s own buffer, which the model copies in."""
        x = np.ascontiguousarray(x)
        if x.dtype != np.int8:
            raise TypeError(f"input must be int8, got {x.dtype}")
        if x.size != self.input_size:
            raise ValueError(f"input has {x.size} values, the model takes {self.input_size}")
        out = np.empty(self.output_shape, dtype=np.int8)
        if in_place:
            tensor = self._input()
            ctypes.memmove(tensor, x.ctypes.data, x.size)
            status = self._invoke(tensor, out.ctypes.data)
        else:
            status = self._invoke(x.ctypes.data, out.ctypes.data)
        if status != 0:
            raise RuntimeError(f"invoke returned {status}")
        return out
