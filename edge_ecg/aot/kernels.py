"""One lowering per supported op: checks, TFLM Prepare-time constants, and C code.

Each ``lower_*`` function validates its op (raising :class:`AotError` for anything it
cannot reproduce exactly) and returns a :class:`Step`. A compute step carries an
``emit`` callable producing the op's C function and its ``static const`` data; an
alias step (RESHAPE, EXPAND_DIMS, SQUEEZE) only says that its output shares the
input's bytes. Integer semantics follow TFLite Micro's reference kernels; see
:mod:`edge_ecg.aot.fixedpoint` for the arithmetic itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from edge_ecg.aot import fixedpoint as fp
from edge_ecg.aot.graph import Graph, Op, Tensor

_SAME, _VALID = 0, 1
_ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6"}


@dataclass
class CFunction:
    """An op's C code: its constant data and its function (both ``static``)."""

    data: str
    function: str
    data_bytes: int  # bytes of constant data (weights, biases, multipliers, tables)


@dataclass
class Step:
    op: Op
    kind: str  # "compute" or "alias"
    inputs: tuple[int, ...]  # activation tensors read, in call order
    output: int  # the tensor written (or aliased)
    emit: Callable[[str], CFunction] | None = None
    summary: dict = field(default_factory=dict)
    # Running in place: the op still computes correctly when its output overlaps its one
    # input, provided the input starts at least ``in_place`` bytes after the output's start
    # (the planner's rule, see planner.pack); ``emit_in_place`` then emits the function
    # without ``restrict``. None: never in place.
    in_place: int | None = None
    emit_in_place: Callable[[str], CFunction] | None = None


# --- C formatting -----------------------------------------------------------------------


def c_int(v: int) -> str:
    v = int(v)
    return "(-2147483647 - 1)" if v == fp.INT32_MIN else str(v)


def c_array(ctype: str, name: str, values: Sequence[int], per_line: int) -> str:
    vals = [c_int(v) for v in values]
    lines = [
        "  " + ", ".join(vals[i : i + per_line]) + ("," if i + per_line < len(vals) else "")
        for i in range(0, len(vals), per_line)
    ]
    return f"static const {ctype} {name}[{len(vals)}] = {{\n" + "\n".join(lines) + "\n};\n"


def _shape(t: Tensor) -> str:
    return "x".join(str(d) for d in t.shape) or "1"


# --- C helpers shared by the generated kernels ------------------------------------------

# Each helper is emitted once, before the op functions, when some op's code names it.
# Order matters: later helpers use earlier ones.
HELPERS: dict[str, str] = {
    "AOT_INLINE": """\
/* Small helpers must inline into the op functions for their constant sizes to fold. */
#if defined(__GNUC__)
#define AOT_INLINE static inline __attribute__((always_inline))
#else
#define AOT_INLINE static inline
#endif
""",
    "AOT_DSP": """\
/* Cortex-M DSP extension (M4, M7, M33 with DSP, M55): ACLE intrinsics, two 16x16
 * multiply-accumulates per instruction (SMLAD) on bytes widened by SXTB16. Every
 * other target (host, ESP32 Xtensa, RISC-V) runs the portable C beside it; both
 * compute the same int32 sums. Define AOT_PORTABLE to force the portable path. */
#if defined(__ARM_FEATURE_DSP) && defined(__ARM_FEATURE_SIMD32) && !defined(AOT_PORTABLE)
#include <arm_acle.h>
#define AOT_DSP 1
/* Four int8 values as one word; memcpy keeps unaligned reads well defined (one LDR). */
AOT_INLINE int32_t aot_read4(const int8_t *p) {
  int32_t v;
  memcpy(&v, p, 4);
  return v;
}
/* Bytes 1 and 3 of v, sign-extended to two halfwords: SXTB16 of v rotated by 8, one
 * instruction (ACLE's __sxtb16 takes no rotation; GCC and Clang get it inline). */
AOT_INLINE int32_t aot_odd16(int32_t v) {
#if defined(__GNUC__)
  int32_t r;
  __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
  return r;
#else
  return __sxtb16((int32_t)(((uint32_t)v >> 8) | ((uint32_t)v << 24)));
#endif
}
#endif
""",
    "aot_out": """\
/* Requantize an accumulator to the output: TFLM's MultiplyByQuantizedMultiplier, plus
 * the output zero point, clamped to the fused activation's range. */
AOT_INLINE int8_t aot_out(int32_t acc, int32_t multiplier, int shift, int32_t zero_point,
                          int32_t lo, int32_t hi) {
  acc = aot_mbqm(acc, multiplier, shift) + zero_point;
  return (int8_t)(acc < lo ? lo : (acc > hi ? hi : acc));
}
""",
    "aot_out_r": """\
/* aot_out where the generator proved two things for every channel: the multiplier is
 * below 0.5 (shift = -right, right >= 1, no left shift) and |acc| < 2^29. Then
 * RoundingDivideByPOT(h, right), TFLM's mask-and-threshold rounding (ties away from
 * zero), equals (h + 2^(right-1) - (h < 0)) >> right, and the add cannot overflow. */
AOT_INLINE int8_t aot_out_r(int32_t acc, int32_t multiplier, int right, int32_t zero_point,
                            int32_t lo, int32_t hi) {
#if defined(AOT_DSP) && defined(__GNUC__)
  /* floor((acc * m + 2^30) / 2^31) = floor((2 acc * m + 2^31) / 2^32): SMMULR of 2 acc,
   * which fits in 32 bits because |acc| < 2^29. */
  int32_t high;
  __asm__("smmulr %0, %1, %2" : "=r"(high) : "r"(acc * 2), "r"(multiplier));
#else
  const int32_t high = (int32_t)(((int64_t)acc * multiplier + ((int64_t)1 << 30)) >> 31);
#endif
  int32_t v = (high + (int32_t)(1u << (right - 1)) - (int32_t)((uint32_t)high >> 31)) >> right;
  v += zero_point;
#if defined(AOT_DSP) && defined(__ARM_FEATURE_SAT)
  if (lo == -128 && hi == 127) return (int8_t)__ssat(v, 8); /* folds away for constant bounds */
#endif
  return (int8_t)(v < lo ? lo : (v > hi ? hi : v));
}
""",
    "aot_dot_2x2": """\
/* Two filter rows (w0, w1) times two input windows (x0, x1), n bytes each:
 * acc[0] += w0.x0, acc[1] += w1.x0, acc[2] += w0.x1, acc[3] += w1.x1. */
AOT_INLINE void aot_dot_2x2(const int8_t *w0, const int8_t *w1, const int8_t *x0,
                            const int8_t *x1, int n, int32_t *acc) {
  int32_t a00 = acc[0], a01 = acc[1], a10 = acc[2], a11 = acc[3];
  int j = 0;
#if defined(AOT_DSP)
  for (; j + 4 <= n; j += 4) {
    const int32_t xa = aot_read4(x0 + j), xb = aot_read4(x1 + j);
    const int32_t xa0 = __sxtb16(xa), xa1 = aot_odd16(xa);
    const int32_t xb0 = __sxtb16(xb), xb1 = aot_odd16(xb);
    const int32_t wa = aot_read4(w0 + j), wb = aot_read4(w1 + j);
    const int32_t wa0 = __sxtb16(wa), wa1 = aot_odd16(wa);
    a00 = __smlad(xa0, wa0, a00);
    a00 = __smlad(xa1, wa1, a00);
    a10 = __smlad(xb0, wa0, a10);
    a10 = __smlad(xb1, wa1, a10);
    const int32_t wb0 = __sxtb16(wb), wb1 = aot_odd16(wb);
    a01 = __smlad(xa0, wb0, a01);
    a01 = __smlad(xa1, wb1, a01);
    a11 = __smlad(xb0, wb0, a11);
    a11 = __smlad(xb1, wb1, a11);
  }
#endif
  for (; j < n; ++j) {
    const int32_t xa = x0[j], xb = x1[j];
    a00 += w0[j] * xa;
    a01 += w1[j] * xa;
    a10 += w0[j] * xb;
    a11 += w1[j] * xb;
  }
  acc[0] = a00;
  acc[1] = a01;
  acc[2] = a10;
  acc[3] = a11;
}
""",
    "aot_dot_2x1": """\
/* Two filter rows times one input window: acc[0] += w0.x, acc[1] += w1.x. */
AOT_INLINE void aot_dot_2x1(const int8_t *w0, const int8_t *w1, const int8_t *x, int n,
                            int32_t *acc) {
  int32_t a0 = acc[0], a1 = acc[1];
  int j = 0;
#if defined(AOT_DSP)
  for (; j + 4 <= n; j += 4) {
    const int32_t xv = aot_read4(x + j);
    const int32_t x0 = __sxtb16(xv), x1 = aot_odd16(xv);
    const int32_t wa = aot_read4(w0 + j), wb = aot_read4(w1 + j);
    a0 = __smlad(x0, __sxtb16(wa), a0);
    a0 = __smlad(x1, aot_odd16(wa), a0);
    a1 = __smlad(x0, __sxtb16(wb), a1);
    a1 = __smlad(x1, aot_odd16(wb), a1);
  }
#endif
  for (; j < n; ++j) {
    a0 += w0[j] * x[j];
    a1 += w1[j] * x[j];
  }
  acc[0] = a0;
  acc[1] = a1;
}
""",
    "aot_dot": """\
/* acc + w.x over n bytes. */
AOT_INLINE int32_t aot_dot(const int8_t *w, const int8_t *x, int n, int32_t acc) {
  int j = 0;
#if defined(AOT_DSP)
  for (; j + 4 <= n; j += 4) {
    const int32_t xv = aot_read4(x + j), wv = aot_read4(w + j);
    acc = __smlad(__sxtb16(xv), __sxtb16(wv), acc);
    acc = __smlad(aot_odd16(xv), aot_odd16(wv), acc);
  }
#endif
  for (; j < n; ++j) acc += w[j] * x[j];
  return acc;
}
""",
    "aot_dw4": """\
/* Depthwise taps for four neighbouring channels: acc[i] += sum over t < taps of
 * w[t * ws + i] * x[t * xs + i]. On DSP, SMLABB/SMLATT multiply the halfwords of one
 * SXTB16 each: channels 0 and 2 from the word, 1 and 3 from its odd bytes. */
AOT_INLINE void aot_dw4(const int8_t *w, int ws, const int8_t *x, int xs, int taps,
                        int32_t *acc) {
  int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
  for (int t = 0; t < taps; ++t) {
#if defined(AOT_DSP)
    const int32_t xv = aot_read4(x + t * xs), wv = aot_read4(w + t * ws);
    const int32_t x02 = __sxtb16(xv), w02 = __sxtb16(wv);
    const int32_t x13 = aot_odd16(xv), w13 = aot_odd16(wv);
    a0 = __smlabb(x02, w02, a0);
    a2 = __smlatt(x02, w02, a2);
    a1 = __smlabb(x13, w13, a1);
    a3 = __smlatt(x13, w13, a3);
#else
    const int8_t *const xt = x + t * xs;
    const int8_t *const wt = w + t * ws;
    a0 += wt[0] * xt[0];
    a1 += wt[1] * xt[1];
    a2 += wt[2] * xt[2];
    a3 += wt[3] * xt[3];
#endif
  }
  acc[0] = a0;
  acc[1] = a1;
  acc[2] = a2;
  acc[3] = a3;
}
""",
}
HELPERS_NEEDING = {
    "aot_out": ("AOT_INLINE",),
    "aot_out_r": ("AOT_INLINE", "AOT_DSP"),
    "aot_dot_2x2": ("AOT_INLINE", "AOT_DSP"),
    "aot_dot_2x1": ("AOT_INLINE", "AOT_DSP"),
    "aot_dot": ("AOT_INLINE", "AOT_DSP"),
    "aot_dw4": ("AOT_INLINE", "AOT_DSP"),
}


def helpers_for(body: str) -> str:
    """The helper definitions ``body`` (the op functions' C) uses, in dependency order."""
    used = {name for name in HELPERS_NEEDING if f"{name}(" in body}
    needed = {dep for name in used for dep in HELPERS_NEEDING[name]} | used
    return "".join(HELPERS[name] + "\n" for name in HELPERS if name in needed)


# --- checks -----------------------------------------------------------------------------


def _tensor(graph: Graph, op: Op, position: int, role: str) -> Tensor:
    if position >= len(op.inputs) or op.inputs[position] < 0:
        raise op.error(f"missing {role} input")
    return graph.tensors[op.inputs[position]]


def _activation(graph: Graph, op: Op, index: int, role: str) -> Tensor:
    t = graph.tensors[index]
    if t.is_const:
        raise op.error(f"{role} {t.name!r} is a constant tensor; only activations are supported")
    if t.dtype != "int8":
        raise op.error(
            f"{role} {t.name!r} is {t.dtype}; only int8 activations are supported "
            "(convert with full-integer int8 quantization and int8 input/output)"
        )
    if not t.scales or not t.per_tensor:
        raise op.error(f"{role} {t.name!r} needs per-tensor int8 quantization")
    return t


def _input(graph: Graph, op: Op, position: int = 0) -> Tensor:
    return _activation(graph, op, _tensor(graph, op, position, "input").index, "input")


def _output(graph: Graph, op: Op) -> Tensor:
    if len(op.outputs) != 1:
        raise op.error(f"expected one output, got {len(op.outputs)}")
    return _activation(graph, op, op.outputs[0], "output")


def _fused(op: Op, activation: int) -> int:
    if activation not in _ACTIVATIONS:
        raise op.error(f"fused activation {activation} is not supported (NONE/RELU/RELU6/RELU_N1_TO_1)")
    return activation


def _options(op: Op):
    if op.options is None:
        raise op.error("builtin options missing")
    return op.options


def _weights(graph: Graph, op: Op, position: int, quantized_dim: int) -> tuple[Tensor, list[float]]:
    w = _tensor(graph, op, position, "weights")
    if not w.is_const or w.dtype != "int8":
        raise op.error(f"weights {w.name!r} must be constant int8, got {w.dtype}")
    if not w.scales:
        raise op.error(f"weights {w.name!r} are not quantized")
    if any(z != 0 for z in w.zero_points):
        raise op.error(f"weights {w.name!r} have a nonzero zero point (TFLM assumes symmetric)")
    channels = w.shape[quantized_dim]
    if len(w.scales) == 1:
        scales = [w.scales[0]] * channels
    elif len(w.scales) == channels and w.quantized_dimension == quantized_dim:
        scales = list(w.scales)
    else:
        raise op.error(
            f"weights {w.name!r}: {len(w.scales)} scales along dimension {w.quantized_dimension} "
            f"do not match {channels} output channels"
        )
    return w, scales


def _bias(graph: Graph, op: Op, position: int, channels: int) -> np.ndarray:
    if position >= len(op.inputs) or op.inputs[position] < 0:
        return np.zeros(channels, dtype=np.int64)
    b = graph.tensors[op.inputs[position]]
    if not b.is_const or b.dtype != "int32":
        raise op.error(f"bias {b.name!r} must be constant int32, got {b.dtype}")
    if b.size != channels:
        raise op.error(f"bias {b.name!r} has {b.size} values for {channels} channels")
    return b.data.reshape(-1).astype(np.int64)


def _nhwc(op: Op, t: Tensor, role: str) -> tuple[int, int, int]:
    if len(t.shape) != 4:
        raise op.error(f"{role} must be 4-D NHWC, got {t.describe()}")
    if t.shape[0] != 1:
        raise op.error(f"{role} batch must be 1, got {t.shape[0]}")
    return t.shape[1], t.shape[2], t.shape[3]


def _padding(op: Op, padding: int, stride: int, in_size: int, k: int, out_size: int) -> int:
    """ComputePaddingHeightWidth for one dimension (dilation 1), checking out_size."""
    if stride < 1:
        raise op.error(f"stride {stride} must be positive")
    if padding == _SAME:
        expected = (in_size + stride - 1) // stride
    elif padding == _VALID:
        expected = (in_size - k + stride) // stride
    else:
        raise op.error(f"padding type {padding} is not supported")
    if expected != out_size:
        raise op.error(f"output size {out_size} does not match the computed {expected}")
    total = max((out_size - 1) * stride + k - in_size, 0)
    return total // 2


def _plus(v: int) -> str:
    """`` + v`` / `` - v`` to append to a C expression; nothing for 0."""
    v = int(v)
    return "" if v == 0 else (f" + {v}" if v > 0 else f" - {-v}")


def _index(terms: Sequence[tuple[str, int]]) -> str:
    """A C sum of ``var * stride`` terms (``0`` when empty)."""
    parts = [v if k == 1 else f"{v} * {k}" for v, k in terms]
    return " + ".join(parts) if parts else "0"


def _dot(n: int, acc: str, w: str, x: str, var: str = "j") -> str:
    """C for ``acc += w[j] * x[j]`` over ``n`` bytes. A length that is not a multiple
    of 16 is split into a multiple of 16 and the rest, so that GCC's -O2 vectorizer
    (which accepts only loops needing no epilogue) still vectorizes the bulk."""
    body = f"{acc} += (int32_t){w}[{var}] * {x}[{var}];"
    bulk = n - n % 16
    if bulk == 0 or bulk == n:
        return f"for (int {var} = 0; {var} < {n}; ++{var}) {body}\n"
    return (
        f"for (int {var} = 0; {var} < {bulk}; ++{var}) {body}\n"
        f"for (int {var} = {bulk}; {var} < {n}; ++{var}) {body}\n"
    )


def _requant_lines(mult: str, shift: str, out_zp: int, amin: int, amax: int, var: str = "acc") -> str:
    return (
        f"{var} = aot_mbqm({var}, {mult}, {shift}){_plus(out_zp)};\n"
        f"if ({var} < {amin}) {var} = {amin};\n"
        f"if ({var} > {amax}) {var} = {amax};\n"
    )


def _indent(code: str, n: int) -> str:
    pad = " " * n
    return "".join(pad + line if line.strip() else line for line in code.splitlines(True))


def _for_loops(loops: Sequence[tuple[str, int]], body: str) -> str:
    """C: ``body`` inside nested ``for (int var = 0; var < size; ++var)`` loops, outermost first."""
    for var, size in reversed(loops):
        body = f"for (int {var} = 0; {var} < {size}; ++{var}) {{\n" + _indent(body, 2) + "}\n"
    return body


class _Multipliers:
    """Per-channel (multiplier, shift) pairs as C: literals if uniform, else arrays."""

    def __init__(self, pairs: list[tuple[int, int]], index: str):
        self.pairs = pairs
        self.uniform = len(set(pairs)) == 1
        self.index = index
        self.right = False  # aot_out_r with right shifts (see right_shift_only)

    def right_shift_only(self, rounding: str, acc_bound: int) -> None:
        """Requantize with aot_out_r where it gives TFLM's result: double rounding, every
        multiplier below 0.5 (a right shift of at least 1, no left shift) and accumulators
        bounded by 2**29 in magnitude (``acc_bound``, from the weights and biases), so
        that RoundingDivideByPOT's rounding add cannot overflow."""
        self.right = rounding == "double" and all(s <= -1 for _, s in self.pairs) and acc_bound < 1 << 29

    def data(self, fn: str) -> tuple[str, int]:
        if self.uniform:
            return "", 0
        m = c_array("int32_t", f"{fn}_multiplier", [p[0] for p in self.pairs], 8)
        if self.right:
            s = c_array("int32_t", f"{fn}_right", [-p[1] for p in self.pairs], 16)
        else:
            s = c_array("int32_t", f"{fn}_shift", [p[1] for p in self.pairs], 16)
        return m + s, 8 * len(self.pairs)

    def refs(self, fn: str) -> tuple[str, str]:
        assert not self.right, "refs() is for aot_mbqm"
        if self.uniform:
            return c_int(self.pairs[0][0]), c_int(self.pairs[0][1])
        return f"{fn}_multiplier[{self.index}]", f"{fn}_shift[{self.index}]"

    def bind(self, fn: str) -> _Multipliers:
        """Remember the op function's name, for :meth:`out`."""
        self.fn = fn
        return self

    def out(self, var: str, channel: str, zero_point: int, lo: int, hi: int) -> str:
        """C of the int8 output for accumulator ``var`` of output channel ``channel``."""
        m, s = self.pairs[0] if self.uniform else (None, None)
        if self.right:
            m, s = (c_int(m), -s) if self.uniform else (f"{self.fn}_multiplier[{channel}]", f"{self.fn}_right[{channel}]")
            return f"aot_out_r({var}, {m}, {s}, {zero_point}, {lo}, {hi})"
        m, s = (c_int(m), s) if self.uniform else (f"{self.fn}_multiplier[{channel}]", f"{self.fn}_shift[{channel}]")
        return f"aot_out({var}, {m}, {s}, {zero_point}, {lo}, {hi})"


def _acc_bound(weights: np.ndarray, *biases) -> int:
    """The largest |accumulator| of a convolution whose filters are the rows of
    ``weights`` (one per output channel): a bias plus 255 (the widest int8 input with
    its offset) times the row's absolute sum."""
    rows = np.abs(weights.astype(np.int64)).sum(axis=1)
    start = np.max([np.abs(np.asarray(b, dtype=np.int64)) for b in biases], axis=0)
    return int((start + 255 * rows).max())


def _window_bounds(ih: int, iw: int, kh: int, kw: int) -> tuple[str, str]:
    """C lines clipping a kernel window at (iy0, ix0) to the input: rows, then columns and ``full``."""
    rows = (
        f"const int ky0 = iy0 < 0 ? -iy0 : 0;\n"
        f"const int ky1 = {ih} - iy0 < {kh} ? {ih} - iy0 : {kh};\n"
    )
    cols = (
        f"const int kx0 = ix0 < 0 ? -ix0 : 0;\n"
        f"const int kx1 = {iw} - ix0 < {kw} ? {iw} - ix0 : {kw};\n"
        f"const int full = ky0 == 0 && ky1 == {kh} && kx0 == 0 && kx1 == {kw};\n"
    )
    return rows, cols


def _filter_data(fn: str, weights, bias_full, bias, partial: bool, mults, channel: str, full_windows: bool = True):
    """The constant arrays of a convolution: weights, bias with the input offset folded in
    (only when some window is full: ``full_windows``), the plain bias where padding clips
    windows, and the requantization multipliers.

    Returns (C text, their bytes, C expression of the plain bias for output channel ``channel``).
    """
    oc = len(bias_full)
    data = c_array("int8_t", f"{fn}_weights", weights.reshape(-1), 16)
    nbytes = weights.size
    if full_windows:  # an array no code reads is an unused-variable error under -Werror
        data += c_array("int32_t", f"{fn}_bias_full", bias_full, 8)
        nbytes += 4 * oc
    bias_ref = "0"  # clipped windows start from the plain bias
    if partial and bias.any():
        data += c_array("int32_t", f"{fn}_bias", bias, 8)
        nbytes += 4 * oc
        bias_ref = f"{fn}_bias[{channel}]"
    mdata, mbytes = mults.data(fn)
    return data + mdata, nbytes + mbytes, bias_ref


def _windows(out_size: int, stride: int, pad: int, k: int, in_size: int) -> bool:
    """Whether some output position's window is clipped by the padding."""
    for o in range(out_size):
        start = o * stride - pad
        if start < 0 or start + k > in_size:
            return True
    return False


def _conv_multipliers(inp: Tensor, scales: list[float], out: Tensor, rounding: str):
    # PopulateConvolutionQuantizationParams: double(input) * double(filter) / double(output)
    return [fp.quantize_multiplier(inp.scale * s / out.scale, rounding) for s in scales]


# --- convolutions along one axis: the fast path -------------------------------------------


@dataclass(frozen=True)
class _Line:
    """A convolution whose output positions run along one axis and whose input windows
    are contiguous runs of bytes: (T, 1, C) records with (k, 1) kernels and Conv1D's
    (1, T, C) with (1, k). Output position ``o`` reads input steps ``o * stride - pad``
    onwards, ``row`` bytes per step; positions in [lo, hi) have windows wholly inside
    the input (no padding), the rest are the border."""

    length_in: int
    length_out: int
    k: int
    stride: int
    pad: int
    row: int
    lo: int
    hi: int

    @property
    def border(self) -> list[tuple[int, int]]:
        """The [start, end) ranges of output positions whose windows are clipped."""
        return [(a, b) for a, b in ((0, self.lo), (self.hi, self.length_out)) if a < b]


def _line(ih: int, iw: int, kh: int, kw: int, sh: int, sw: int, ph: int, pw: int, oh: int, ow: int,
          channels: int, depthwise: bool) -> _Line | None:
    """The 1-D view of a convolution, or None when it has none (true 2-D windows)."""
    if ow == 1 and pw == 0 and kw == iw and (iw == 1 or not depthwise):
        n_in, n_out, k, s, p, row = ih, oh, kh, sh, ph, iw * channels
    elif oh == 1 and ph == 0 and kh == ih == 1:
        n_in, n_out, k, s, p, row = iw, ow, kw, sw, pw, channels
    else:
        return None
    inside = [o for o in range(n_out) if o * s - p >= 0 and o * s - p + k <= n_in]
    lo, hi = (inside[0], inside[-1] + 1) if inside else (n_out, n_out)
    return _Line(n_in, n_out, k, s, p, row, lo, hi)


def _line_border(line: _Line, body: str, ranges: Sequence[tuple[int, int]] | None = None) -> str:
    """C running ``body`` for each border position ``o`` (of ``ranges``, default all), with
    ``x`` at its first input byte inside the input and ``t0``/``t1`` the taps [t0, t1) that
    are inside."""
    code = ""
    for a, b in line.border if ranges is None else ranges:
        code += (
            f"for (int o = {a}; o < {b}; ++o) {{\n"
            f"  const int s0 = o * {line.stride}{_plus(-line.pad)};\n"
            f"  const int t0 = s0 < 0 ? -s0 : 0;\n"
            f"  const int t1 = {line.length_in} - s0 < {line.k} ? {line.length_in} - s0 : {line.k};\n"
            f"  const int8_t *const x = in + (s0 + t0) * {line.row};\n"
            + _indent(body, 2)
            + "}\n"
        )
    return code


def _line_conv_body(fn: str, line: _Line, oc: int, mults: _Multipliers, out_zp: int, amin: int, amax: int,
                    in_off: int, bias_ref: str, weights: str, bias_full: str) -> str:
    """The statements of a CONV_2D (or FULLY_CONNECTED: k = 1, no padding) on a line:
    interior positions two at a time against two filters at a time (aot_dot_2x2: the
    four dot products share their loads), the border with per-position clipping."""
    window = line.k * line.row  # bytes of a full window = one filter's length
    step = line.stride * line.row

    def out(var: str, y: str, ch: str) -> str:
        dest = f"{y}[{ch}]" if "[" not in y else f"{y[:-1]} + {ch}]"
        return f"{dest} = {mults.out(var, ch, out_zp, amin, amax)};\n"

    pairs = oc - oc % 2
    n = line.hi - line.lo
    clipped = (
        f"int8_t *const y = out + o * {oc};\n"
        f"for (int c = 0; c < {oc}; ++c) {{\n"
        f"  const int8_t *const w = {weights} + c * {window} + t0 * {line.row};\n"
        f"  int32_t acc = {bias_ref};\n"
        f"  for (int j = 0; j < (t1 - t0) * {line.row}; ++j) acc += w[j] * (x[j]{_plus(in_off)});\n"
        + _indent(out("acc", "y", "c"), 2)
        + "}\n"
    )
    # Positions in ascending order (front border, interior, back border): the order
    # _line_in_place_gap assumes when the output overwrites the input.
    code = _line_border(line, clipped, [(a, b) for a, b in line.border if a == 0])
    if n >= 2:
        two = (
            f"for (int c = 0; c < {pairs}; c += 2) {{\n"
            f"  const int8_t *const w = {weights} + c * {window};\n"
            f"  int32_t acc[4];\n"
            f"  acc[0] = acc[2] = {bias_full}[c];\n"
            f"  acc[1] = acc[3] = {bias_full}[c + 1];\n"
            f"  aot_dot_2x2(w, w + {window}, x, x + {step}, {window}, acc);\n"
            + _indent(out("acc[0]", "y", "c") + out("acc[1]", "y", "c + 1")
                      + out("acc[2]", f"y[{oc}]", "c") + out("acc[3]", f"y[{oc}]", "c + 1"), 2)
            + "}\n"
        )
        if oc % 2:
            c = oc - 1
            two += (
                f"{{\n  const int8_t *const w = {weights} + {c * window};\n"
                f"  int32_t acc[2];\n"
                f"  acc[0] = aot_dot(w, x, {window}, {bias_full}[{c}]);\n"
                f"  acc[1] = aot_dot(w, x + {step}, {window}, {bias_full}[{c}]);\n"
                + _indent(out("acc[0]", "y", str(c)) + out("acc[1]", f"y[{oc}]", str(c)), 2)
                + "}\n"
            )
        code += (
            f"for (int o = {line.lo}; o < {line.lo + n - n % 2}; o += 2) {{\n"
            f"  const int8_t *const x = in + o * {step}{_plus(-line.pad * line.row)};\n"
            f"  int8_t *const y = out + o * {oc};\n"
            + _indent(two, 2) + "}\n"
        )
    if n % 2:
        one = (
            f"for (int c = 0; c < {pairs}; c += 2) {{\n"
            f"  const int8_t *const w = {weights} + c * {window};\n"
            f"  int32_t acc[2];\n"
            f"  acc[0] = {bias_full}[c];\n"
            f"  acc[1] = {bias_full}[c + 1];\n"
            f"  aot_dot_2x1(w, w + {window}, x, {window}, acc);\n"
            + _indent(out("acc[0]", "y", "c") + out("acc[1]", "y", "c + 1"), 2)
            + "}\n"
        )
        if oc % 2:
            c = oc - 1
            one += (
                f"{{\n  const int32_t acc = aot_dot({weights} + {c * window}, x, {window}, {bias_full}[{c}]);\n"
                + _indent(out("acc", "y", str(c)), 2) + "}\n"
            )
        code += (
            f"{{\n  const int8_t *const x = in + {(line.hi - 1) * step - line.pad * line.row};\n"
            f"  int8_t *const y = out + {(line.hi - 1) * oc};\n"
            + _indent(one, 2) + "}\n"
        )
    code += _line_border(line, clipped, [(a, b) for a, b in line.border if a != 0])
    return code


def _line_in_place_gap(line: _Line, out_row: int) -> int:
    """The least ``input - output`` start distance (bytes) at which :func:`_line_conv_body`
    may write its output over its own input.

    Positions run in ascending order; interior positions go in pairs [lo, lo + 2), ...,
    the odd last one (hi - 1) and the border alone. While position ``o``'s group is
    computed, its ``out_row`` output bytes are written between reads of the group's
    windows, and every later read starts at or after the group's first window start
    ``max(0, g * stride - pad)`` steps of ``row`` bytes. So the output's bytes up to the
    end of row ``o`` must lie below that input byte, for every ``o``."""
    n = line.hi - line.lo
    gap = None
    for o in range(line.length_out):
        paired = line.lo <= o < line.lo + n - n % 2
        g = line.lo + (o - line.lo) // 2 * 2 if paired else o
        need = (o + 1) * out_row - max(0, g * line.stride - line.pad) * line.row
        gap = need if gap is None else max(gap, need)
    return gap if gap is not None else 0


def _line_depthwise_body(fn: str, line: _Line, c: int, mults: _Multipliers, out_zp: int, amin: int, amax: int,
                         in_off: int, bias_ref: str) -> str:
    """The statements of a DEPTHWISE_CONV_2D (depth multiplier 1) on a line: for each
    interior position, four channels at a time through aot_dw4 (accumulators in
    registers), the rest one by one; the border with per-position clipping."""
    weights, bias_full = f"{fn}_weights", f"{fn}_bias_full"
    step = line.stride * line.row

    def out(var: str, ch: str) -> str:
        return f"y[{ch}] = {mults.out(var, ch, out_zp, amin, amax)};\n"

    quads = c - c % 4
    code = ""
    if line.hi > line.lo:
        each = ""
        if quads:
            each += (
                f"for (int ch = 0; ch < {quads}; ch += 4) {{\n"
                f"  int32_t acc[4];\n"
                f"  for (int i = 0; i < 4; ++i) acc[i] = {bias_full}[ch + i];\n"
                f"  aot_dw4({weights} + ch, {c}, x + ch, {line.row}, {line.k}, acc);\n"
                + _indent("".join(out(f"acc[{i}]", f"ch + {i}") for i in range(4)), 2)
                + "}\n"
            )
        if c % 4:
            each += (
                f"for (int ch = {quads}; ch < {c}; ++ch) {{\n"
                f"  int32_t acc = {bias_full}[ch];\n"
                f"  for (int t = 0; t < {line.k}; ++t) acc += {weights}[t * {c} + ch] * x[t * {line.row} + ch];\n"
                + _indent(out("acc", "ch"), 2)
                + "}\n"
            )
        code += (
            f"for (int o = {line.lo}; o < {line.hi}; ++o) {{\n"
            f"  const int8_t *const x = in + o * {step}{_plus(-line.pad * line.row)};\n"
            f"  int8_t *const y = out + o * {c};\n"
            + _indent(each, 2)
            + "}\n"
        )
    if line.border:
        clipped = (
            f"int8_t *const y = out + o * {c};\n"
            f"for (int ch = 0; ch < {c}; ++ch) {{\n"
            f"  int32_t acc = {bias_ref};\n"
            f"  for (int t = 0; t < t1 - t0; ++t) acc += {weights}[(t0 + t) * {c} + ch] * (x[t * {line.row} + ch]{_plus(in_off)});\n"
            + _indent(out("acc", "ch"), 2)
            + "}\n"
        )
        code += _line_border(line, clipped)
    return code

# --- CONV_2D ----------------------------------------------------------------------------


def lower_conv_2d(graph: Graph, op: Op, rounding: str) -> Step:
    o = _options(op)
    inp, out = _input(graph, op), _output(graph, op)
    w, scales = _weights(graph, op, 1, 0)
    ih, iw, ic = _nhwc(op, inp, "input")
    oh, ow, oc = _nhwc(op, out, "output")
    if len(w.shape) != 4:
        raise op.error(f"filter must be 4-D, got {w.describe()}")
    woc, kh, kw, wic = w.shape
    if woc != oc:
        raise op.error(f"filter has {woc} output channels, output has {oc}")
    if wic != ic:
        raise op.error(f"grouped convolution ({ic} input channels, filter depth {wic}) is not supported")
    if o.dilationHFactor != 1 or o.dilationWFactor != 1:
        raise op.error(f"dilation {o.dilationHFactor}x{o.dilationWFactor} is not supported (only 1)")
    sh, sw = o.strideH, o.strideW
    ph = _padding(op, o.padding, sh, ih, kh, oh)
    pw = _padding(op, o.padding, sw, iw, kw, ow)
    act = _fused(op, o.fusedActivationFunction)
    amin, amax = fp.activation_range(act, out.scale, out.zero_point)
    bias = _bias(graph, op, 2, oc)
    mults = _Multipliers(_conv_multipliers(inp, scales, out, rounding), "oc")
    in_off, out_zp = -inp.zero_point, out.zero_point
    weights = w.data.astype(np.int64)
    # Folding input_offset * sum(weights) into the bias is exact in integer arithmetic
    # for windows that are not clipped by the padding; clipped ones keep the offset.
    bias_full = [fp.wrap32(int(bias[c]) + in_off * int(weights[c].sum())) for c in range(oc)]
    partial = _windows(oh, sh, ph, kh, ih) or _windows(ow, sw, pw, kw, iw)
    contiguous = kw == iw  # a full window is then one contiguous run of kh*kw*ic bytes
    line = _line(ih, iw, kh, kw, sh, sw, ph, pw, oh, ow, ic, depthwise=False)
    if line is not None:
        mults.right_shift_only(rounding, _acc_bound(weights.reshape(oc, -1), bias_full, bias))

    def emit_line(fn: str, in_place: bool = False) -> CFunction:
        data, nbytes, bias_ref = _filter_data(fn, weights, bias_full, bias, partial, mults, "c", line.hi > line.lo)
        body = _line_conv_body(fn, line, oc, mults.bind(fn), out_zp, amin, amax, in_off, bias_ref,
                               f"{fn}_weights", f"{fn}_bias_full")
        # In place the output overwrites input bytes already read: no restrict then.
        params = ("const int8_t *in, int8_t *out" if in_place
                  else "const int8_t *restrict in, int8_t *restrict out")
        where = (f"; in place: the output starts at least {_line_in_place_gap(line, oc)} bytes below the input "
                 "and overwrites only input bytes already read" if in_place else "")
        func = (
            f"/* CONV_2D (op #{op.index}): {inp.describe()} -> {out.describe()}, filter {_shape(w)}, "
            f"stride {sh}x{sw}, padding {ph}x{pw}, {_ACTIVATIONS[act]} [{amin}, {amax}]; along one axis: "
            f"{line.length_out} positions, windows of {line.k} x {line.row} contiguous bytes, "
            f"positions [{line.lo}, {line.hi}) unpadded{where} */\n"
            f"static void {fn}({params}) {{\n"
            + _indent(body, 2) + "}\n"
        )
        return CFunction(data, func, nbytes)

    def emit(fn: str) -> CFunction:
        if line is not None:
            return emit_line(fn)
        data, nbytes, bias_ref = _filter_data(fn, weights, bias_full, bias, partial, mults, "oc")
        mult, shift = mults.refs(fn)
        if contiguous:
            full = (
                f"const int8_t *const x = in + (iy0 * {iw} + ix0) * {ic};\n"
                f"acc = {fn}_bias_full[oc];\n"
                + _dot(kh * kw * ic, "acc", "w", "x")
            )
        else:
            full = (
                f"acc = {fn}_bias_full[oc];\n"
                f"for (int ky = 0; ky < {kh}; ++ky) {{\n"
                f"  const int8_t *const x = in + ((iy0 + ky) * {iw} + ix0) * {ic};\n"
                f"  const int8_t *const wr = w + ky * {kw * ic};\n"
                + _indent(_dot(kw * ic, "acc", "wr", "x"), 2)
                + "}\n"
            )
        if partial:
            clipped = (
                f"acc = {bias_ref};\n"
                f"for (int ky = ky0; ky < ky1; ++ky) {{\n"
                f"  const int8_t *const x = in + ((iy0 + ky) * {iw} + ix0 + kx0) * {ic};\n"
                f"  const int8_t *const wr = w + (ky * {kw} + kx0) * {ic};\n"
                f"  for (int j = 0; j < (kx1 - kx0) * {ic}; ++j)\n"
                f"    acc += (int32_t)wr[j] * (x[j]{_plus(in_off)});\n"
                f"}}\n"
            )
            body = (
                "if (full) {\n" + _indent(full, 2) + "} else {\n" + _indent(clipped, 2) + "}\n"
            )
            window, window_x = _window_bounds(ih, iw, kh, kw)
        else:
            body, window, window_x = full, "", ""
        func = (
            f"/* CONV_2D (op #{op.index}): {inp.describe()} -> {out.describe()}, filter {_shape(w)}, "
            f"stride {sh}x{sw}, padding {ph}x{pw}, {_ACTIVATIONS[act]} [{amin}, {amax}] */\n"
            f"static void {fn}(const int8_t *restrict in, int8_t *restrict out) {{\n"
            f"  for (int oy = 0; oy < {oh}; ++oy) {{\n"
            f"    const int iy0 = oy * {sh}{_plus(-ph)};\n"
            + _indent(window, 4)
            + f"    for (int ox = 0; ox < {ow}; ++ox) {{\n"
            f"      const int ix0 = ox * {sw}{_plus(-pw)};\n"
            + _indent(window_x, 6)
            + f"      int8_t *const o = out + (oy * {ow} + ox) * {oc};\n"
            f"      for (int oc = 0; oc < {oc}; ++oc) {{\n"
            f"        const int8_t *const w = {fn}_weights + oc * {kh * kw * ic};\n"
            f"        int32_t acc;\n"
            + _indent(body + _requant_lines(mult, shift, out_zp, amin, amax), 8)
            + "        o[oc] = (int8_t)acc;\n"
            "      }\n    }\n  }\n}\n"
        )
        return CFunction(data, func, nbytes)

    macs = oh * ow * oc * kh * kw * ic
    if line is None:
        return Step(op, "compute", (inp.index,), out.index, emit, {"macs": macs})
    return Step(op, "compute", (inp.index,), out.index, emit, {"macs": macs},
                in_place=_line_in_place_gap(line, oc), emit_in_place=lambda fn: emit_line(fn, in_place=True))


# --- DEPTHWISE_CONV_2D ------------------------------------------------------------------


def lower_depthwise_conv_2d(graph: Graph, op: Op, rounding: str) -> Step:
    o = _options(op)
    inp, out = _input(graph, op), _output(graph, op)
    w, scales = _weights(graph, op, 1, 3)
    ih, iw, ic = _nhwc(op, inp, "input")
    oh, ow, oc = _nhwc(op, out, "output")
    if len(w.shape) != 4 or w.shape[0] != 1:
        raise op.error(f"depthwise filter must be 1xHxWxC, got {w.describe()}")
    _, kh, kw, woc = w.shape
    mult_depth = o.depthMultiplier
    if woc != oc or oc != ic * mult_depth:
        raise op.error(
            f"channels do not match: input {ic} x depth multiplier {mult_depth}, filter {woc}, output {oc}"
        )
    if o.dilationHFactor != 1 or o.dilationWFactor != 1:
        raise op.error(f"dilation {o.dilationHFactor}x{o.dilationWFactor} is not supported (only 1)")
    sh, sw = o.strideH, o.strideW
    ph = _padding(op, o.padding, sh, ih, kh, oh)
    pw = _padding(op, o.padding, sw, iw, kw, ow)
    act = _fused(op, o.fusedActivationFunction)
    amin, amax = fp.activation_range(act, out.scale, out.zero_point)
    bias = _bias(graph, op, 2, oc)
    mults = _Multipliers(_conv_multipliers(inp, scales, out, rounding), "c")
    in_off, out_zp = -inp.zero_point, out.zero_point
    weights = w.data.astype(np.int64).reshape(kh * kw, oc)
    bias_full = [fp.wrap32(int(bias[c]) + in_off * int(weights[:, c].sum())) for c in range(oc)]
    partial = _windows(oh, sh, ph, kh, ih) or _windows(ow, sw, pw, kw, iw)
    xc = "x[c]" if mult_depth == 1 else f"x[c / {mult_depth}]"
    line = _line(ih, iw, kh, kw, sh, sw, ph, pw, oh, ow, ic, depthwise=True) if mult_depth == 1 else None
    if line is not None:
        mults.right_shift_only(rounding, _acc_bound(weights.T, bias_full, bias))

    def emit_line(fn: str) -> CFunction:
        data, nbytes, bias_ref = _filter_data(fn, weights, bias_full, bias, partial, mults, "ch", line.hi > line.lo)
        body = _line_depthwise_body(fn, line, oc, mults.bind(fn), out_zp, amin, amax, in_off, bias_ref)
        func = (
            f"/* DEPTHWISE_CONV_2D (op #{op.index}): {inp.describe()} -> {out.describe()}, "
            f"filter {_shape(w)}, multiplier 1, stride {sh}x{sw}, padding {ph}x{pw}, "
            f"{_ACTIVATIONS[act]} [{amin}, {amax}]; along one axis: {line.length_out} positions, "
            f"{line.k} taps, positions [{line.lo}, {line.hi}) unpadded */\n"
            f"static void {fn}(const int8_t *restrict in, int8_t *restrict out) {{\n"
            + _indent(body, 2) + "}\n"
        )
        return CFunction(data, func, nbytes)

    def emit(fn: str) -> CFunction:
        if line is not None:
            return emit_line(fn)
        data, nbytes, bias_ref = _filter_data(fn, weights, bias_full, bias, partial, mults, "c")
        mult, shift = mults.refs(fn)
        full = (
            f"for (int c = 0; c < {oc}; ++c) acc[c] = {fn}_bias_full[c];\n"
            f"for (int ky = 0; ky < {kh}; ++ky) {{\n"
            f"  for (int kx = 0; kx < {kw}; ++kx) {{\n"
            f"    const int8_t *const x = in + ((iy0 + ky) * {iw} + ix0 + kx) * {ic};\n"
            f"    const int8_t *const w = {fn}_weights + (ky * {kw} + kx) * {oc};\n"
            f"    for (int c = 0; c < {oc}; ++c) acc[c] += (int32_t)w[c] * {xc};\n"
            f"  }}\n}}\n"
        )
        if partial:
            clipped = (
                f"for (int c = 0; c < {oc}; ++c) acc[c] = {bias_ref};\n"
                f"for (int ky = ky0; ky < ky1; ++ky) {{\n"
                f"  for (int kx = kx0; kx < kx1; ++kx) {{\n"
                f"    const int8_t *const x = in + ((iy0 + ky) * {iw} + ix0 + kx) * {ic};\n"
                f"    const int8_t *const w = {fn}_weights + (ky * {kw} + kx) * {oc};\n"
                f"    for (int c = 0; c < {oc}; ++c) acc[c] += (int32_t)w[c] * ({xc}{_plus(in_off)});\n"
                f"  }}\n}}\n"
            )
            body = "if (full) {\n" + _indent(full, 2) + "} else {\n" + _indent(clipped, 2) + "}\n"
            window, window_x = _window_bounds(ih, iw, kh, kw)
        else:
            body, window, window_x = full, "", ""
        func = (
            f"/* DEPTHWISE_CONV_2D (op #{op.index}): {inp.describe()} -> {out.describe()}, "
            f"filter {_shape(w)}, multiplier {mult_depth}, stride {sh}x{sw}, padding {ph}x{pw}, "
            f"{_ACTIVATIONS[act]} [{amin}, {amax}] */\n"
            f"static void {fn}(const int8_t *restrict in, int8_t *restrict out) {{\n"
            f"  int32_t acc[{oc}];\n"
            f"  for (int oy = 0; oy < {oh}; ++oy) {{\n"
            f"    const int iy0 = oy * {sh}{_plus(-ph)};\n"
            + _indent(window, 4)
            + f"    for (int ox = 0; ox < {ow}; ++ox) {{\n"
            f"      const int ix0 = ox * {sw}{_plus(-pw)};\n"
            + _indent(window_x, 6)
            + f"      int8_t *const o = out + (oy * {ow} + ox) * {oc};\n"
            + _indent(body, 6)
            + f"      for (int c = 0; c < {oc}; ++c) {{\n"
            f"        int32_t v = acc[c];\n"
            + _indent(_requant_lines(mult, shift, out_zp, amin, amax, "v"), 8)
            + "        o[c] = (int8_t)v;\n"
            "      }\n    }\n  }\n}\n"
        )
        return CFunction(data, func, nbytes)

    return Step(op, "compute", (inp.index,), out.index, emit, {"macs": oh * ow * oc * kh * kw})


# --- FULLY_CONNECTED --------------------------------------------------------------------


def lower_fully_connected(graph: Graph, op: Op, rounding: str) -> Step:
    o = _options(op)
    inp, out = _input(graph, op), _output(graph, op)
    w, scales = _weights(graph, op, 1, 0)
    if len(w.shape) != 2:
        raise op.error(f"weights must be 2-D, got {w.describe()}")
    if o.weightsFormat != 0:
        raise op.error(f"weights format {o.weightsFormat} is not supported (only DEFAULT)")
    n, k = w.shape
    if not out.shape or out.shape[-1] != n:
        raise op.error(f"output {out.describe()} does not end in {n} units")
    batches = out.size // n
    if inp.size != batches * k:
        raise op.error(f"input {inp.describe()} is not {batches} rows of {k}")
    act = _fused(op, o.fusedActivationFunction)
    amin, amax = fp.activation_range(act, out.scale, out.zero_point)
    bias = _bias(graph, op, 2, n)
    if len(w.scales) == 1:
        # GetQuantizedConvolutionMultipler multiplies the two float32 scales in float.
        product = float(np.float32(inp.scale) * np.float32(w.scales[0]))
        pairs = [fp.quantize_multiplier(product / out.scale, rounding)] * n
    else:  # per-channel: as the convolutions, in double
        pairs = _conv_multipliers(inp, scales, out, rounding)
    mults = _Multipliers(pairs, "o")
    in_off, out_zp = -inp.zero_point, out.zero_point
    weights = w.data.astype(np.int64)
    bias_full = [fp.wrap32(int(bias[c]) + in_off * int(weights[c].sum())) for c in range(n)]
    mults.right_shift_only(rounding, _acc_bound(weights, bias_full))

    def emit(fn: str) -> CFunction:
        data = c_array("int8_t", f"{fn}_weights", weights.reshape(-1), 16)
        data += c_array("int32_t", f"{fn}_bias_full", bias_full, 8)
        mdata, mbytes = mults.data(fn)
        data += mdata
        # Each batch row is one position of a line with kernel 1 and no padding.
        line = _Line(batches, batches, 1, 1, 0, k, 0, batches)
        body = _line_conv_body(fn, line, n, mults.bind(fn), out_zp, amin, amax, in_off, "0",
                               f"{fn}_weights", f"{fn}_bias_full")
        func = (
            f"/* FULLY_CONNECTED (op #{op.index}): {inp.describe()} -> {out.describe()}, "
            f"weights {_shape(w)} {'per-channel' if len(w.scales) > 1 else 'per-tensor'}, "
            f"{_ACTIVATIONS[act]} [{amin}, {amax}] */\n"
            f"static void {fn}(const int8_t *restrict in, int8_t *restrict out) {{\n"
            + _indent(body, 2) + "}\n"
        )
        return CFunction(data, func, weights.size + 4 * n + mbytes)

    return Step(op, "compute", (inp.index,), out.index, emit, {"macs": batches * n * k})


# --- MEAN / REDUCE_MAX ------------------------------------------------------------------


@dataclass
class _Reduction:
    """A reduction over ``axes`` of ``inp``: the loops the C code runs."""

    inp: Tensor
    out: Tensor
    axes: list[int]
    count: int  # values reduced into each output
    outer: list[tuple[int, int]]  # (size, input stride) of the kept dimensions > 1
    inner: list[tuple[int, int]]  # (size, input stride) of the reduced dimensions > 1

    def loops(self, init: str, update: str, finish: str) -> str:
        """C that writes the outputs in order through ``o``: for each, ``init`` (with
        ``x`` pointing at its first input), ``update`` once per reduced value ``x[idx]``
        (``{x}`` in the template), then ``finish``, which stores ``*o++``."""
        base = _index([(f"k{i}", stride) for i, (_, stride) in enumerate(self.outer)])
        idx = _index([(f"r{i}", stride) for i, (_, stride) in enumerate(self.inner)])
        inner = _for_loops([(f"r{i}", size) for i, (size, _) in enumerate(self.inner)], update.format(x=f"x[{idx}]"))
        each = f"const int8_t *const x = in + {base};\n" + init + inner + finish
        return "int8_t *o = out;\n" + _for_loops([(f"k{i}", size) for i, (size, _) in enumerate(self.outer)], each)


def _reduction(graph: Graph, op: Op) -> _Reduction:
    """Checks shared by MEAN and REDUCE_MAX, and the axes resolved as TFLM's
    ResolveAxis does (negative axes wrapped, duplicates dropped)."""
    o = _options(op)
    inp, out = _input(graph, op), _output(graph, op)
    axis_t = _tensor(graph, op, 1, "axis")
    if not axis_t.is_const or axis_t.dtype != "int32":
        raise op.error("axis must be a constant int32 tensor")
    rank = len(inp.shape)
    axes = []
    for a in axis_t.data.reshape(-1).tolist():
        a = a + rank if a < 0 else a
        if not 0 <= a < rank:
            raise op.error(f"axis {a} out of range for {inp.describe()}")
        if a not in axes:
            axes.append(a)
    kept = [d for d in range(rank) if d not in axes]
    expected = [1 if d in axes else inp.shape[d] for d in range(rank)] if o.keepDims else [
        inp.shape[d] for d in kept
    ]
    if int(np.prod(expected, dtype=np.int64)) != out.size:
        raise op.error(f"output {out.describe()} does not match reducing {inp.describe()} over {axes}")
    if inp.size == 0:
        raise op.error("empty input")
    count = int(np.prod([inp.shape[a] for a in axes], dtype=np.int64)) if axes else 1
    strides = [int(np.prod(inp.shape[d + 1 :], dtype=np.int64)) for d in range(rank)]
    outer = [(inp.shape[d], strides[d]) for d in kept if inp.shape[d] > 1]
    inner = [(inp.shape[d], strides[d]) for d in axes if inp.shape[d] > 1]
    return _Reduction(inp, out, axes, count, outer, inner)


def lower_mean(graph: Graph, op: Op, rounding: str) -> Step:
    r = _reduction(graph, op)
    inp, out, count = r.inp, r.out, r.count
    # PrepareMeanOrSumHelper + QuantizedMeanOrSum: the 1/count factor is folded into
    # the multiplier using shift = floor(log2(count)), clamped as TFLM does.
    mult, shift = fp.quantize_multiplier(inp.scale / out.scale, rounding)
    extra = min(count.bit_length() - 1, 32, 31 + shift)
    mult = (mult << extra) // count
    shift -= extra
    in_zp, out_zp = inp.zero_point, out.zero_point

    def emit(fn: str) -> CFunction:
        finish = (
            f"int32_t acc = sum{_plus(-in_zp * count)};\n"
            + _requant_lines(c_int(mult), c_int(shift), out_zp, -128, 127)
            + "*o++ = (int8_t)acc;\n"
        )
        func = (
            f"/* MEAN (op #{op.index}): {inp.describe()} -> {out.describe()} over axes "
            f"{r.axes}, {count} values each */\n"
            f"static void {fn}(const int8_t *restrict in, int8_t *restrict out) {{\n"
            + _indent(r.loops("int32_t sum = 0;\n", "sum += {x};\n", finish), 2)
            + "}\n"
        )
        return CFunction("", func, 0)

    return Step(op, "compute", (inp.index,), out.index, emit)


def lower_reduce_max(graph: Graph, op: Op, rounding: str) -> Step:
    r = _reduction(graph, op)
    inp, out = r.inp, r.out
    # EvalMaxHelper (int8) insists on identical quantization: ReduceGeneric then keeps
    # the largest raw int8 value, starting from -128, with no requantization.
    if float(np.float32(inp.scale)) != float(np.float32(out.scale)) or inp.zero_point != out.zero_point:
        raise op.error(
            f"input quantization ({inp.scale}, {inp.zero_point}) differs from the output's "
            f"({out.scale}, {out.zero_point}); TFLM's int8 REDUCE_MAX rejects this"
        )

    def emit(fn: str) -> CFunction:
        func = (
            f"/* REDUCE_MAX (op #{op.index}): {inp.describe()} -> {out.describe()} over axes "
            f"{r.axes}, {r.count} values each */\n"
            f"static void {fn}(const int8_t *restrict in, int8_t *restrict out) {{\n"
            + _indent(
                r.loops("int8_t m = -128;\n", "if ({x} > m) m = {x};\n", "*o++ = m;\n"), 2
            )
            + "}\n"
        )
        return CFunction("", func, 0)

    return Step(op, "compute", (inp.index,), out.index, emit)


# --- AVERAGE_POOL_2D / MAX_POOL_2D ------------------------------------------------------


def _lower_pool(graph: Graph, op: Op, kind: str) -> Step:
    o = _options(op)
    inp, out = _input(graph, op), _output(graph, op)
    ih, iw, c = _nhwc(op, inp, "input")
    oh, ow, oc = _nhwc(op, out, "output")
    if oc != c:
        raise op.error(f"channels change from {c} to {oc}")
    # PoolingPrepare requires the same quantization in and out.
    scale_diff = float(abs(np.float32(inp.scale) - np.float32(out.scale)))  # float, as in C++
    if scale_diff > 1.0e-6 or inp.zero_point != out.zero_point:
        raise op.error("input and output quantization differ (TFLM rejects this)")
    kh, kw, sh, sw = o.filterHeight, o.filterWidth, o.strideH, o.strideW
    ph = _padding(op, o.padding, sh, ih, kh, oh)
    pw = _padding(op, o.padding, sw, iw, kw, ow)
    act = _fused(op, o.fusedActivationFunction)
    amin, amax = fp.activation_range(act, out.scale, out.zero_point)
    for oy in range(oh):
        for ox in range(ow):
            y0, x0 = oy * sh - ph, ox * sw - pw
            if min(kh, ih - y0) <= max(0, -y0) or min(kw, iw - x0) <= max(0, -x0):
                raise op.error("a pooling window lies entirely in the padding")

    def emit(fn: str) -> CFunction:
        if kind == "avg":
            init = "acc[ch] = 0"
            update = "acc[ch] += x[ch]"
            finish = (
                "const int n = (ky1 - ky0) * (kx1 - kx0);\n"
                f"for (int ch = 0; ch < {c}; ++ch) {{\n"
                "  /* round half away from zero, as TFLM's integer AveragePool */\n"
                "  int32_t v = acc[ch] > 0 ? (acc[ch] + n / 2) / n : (acc[ch] - n / 2) / n;\n"
                f"  if (v < {amin}) v = {amin};\n"
                f"  if (v > {amax}) v = {amax};\n"
                "  o[ch] = (int8_t)v;\n"
                "}\n"
            )
            decl = f"int32_t acc[{c}];"
        else:
            init = "acc[ch] = -128"
            update = "if (x[ch] > acc[ch]) acc[ch] = x[ch]"
            # Clamps that cannot trigger on an int8 are left out (-Wtype-limits).
            clamp = (f"  if (v < {amin}) v = {amin};\n" if amin > -128 else "") + (
                f"  if (v > {amax}) v = {amax};\n" if amax < 127 else ""
            )
            finish = (
                f"for (int ch = 0; ch < {c}; ++ch) {{\n"
                "  int8_t v = acc[ch];\n" + clamp + "  o[ch] = v;\n"
                "}\n"
            )
            decl = f"int8_t acc[{c}];"
        func = (
            f"/* {op.name} (op #{op.index}): {inp.describe()} -> {out.describe()}, window "
            f"{kh}x{kw}, stride {sh}x{sw}, padding {ph}x{pw}, {_ACTIVATIONS[act]} [{amin}, {amax}] */\n"
            f"static void {fn}(const int8_t *restrict in, int8_t *restrict out) {{\n"
            f"  {decl}\n"
            f"  for (int oy = 0; oy < {oh}; ++oy) {{\n"
            f"    const int iy0 = oy * {sh}{_plus(-ph)};\n"
            f"    const int ky0 = iy0 < 0 ? -iy0 : 0;\n"
            f"    const int ky1 = {ih} - iy0 < {kh} ? {ih} - iy0 : {kh};\n"
            f"    for (int ox = 0; ox < {ow}; ++ox) {{\n"
            f"      const int ix0 = ox * {sw}{_plus(-pw)};\n"
            f"      const int kx0 = ix0 < 0 ? -ix0 : 0;\n"
            f"      const int kx1 = {iw} - ix0 < {kw} ? {iw} - ix0 : {kw};\n"
            f"      int8_t *const o = out + (oy * {ow} + ox) * {c};\n"
            f"      for (int ch = 0; ch < {c}; ++ch) {init};\n"
            f"      for (int ky = ky0; ky < ky1; ++ky) {{\n"
            f"        for (int kx = kx0; kx < kx1; ++kx) {{\n"
            f"          const int8_t *const x = in + ((iy0 + ky) * {iw} + ix0 + kx) * {c};\n"
            f"          for (int ch = 0; ch < {c}; ++ch) {update};\n"
            f"        }}\n      }}\n"
            + _indent(finish, 6)
            + "    }\n  }\n}\n"
        )
        return CFunction("", func, 0)

    return Step(op, "compute", (inp.index,), out.index, emit)


def lower_average_pool_2d(graph: Graph, op: Op, rounding: str) -> Step:
    return _lower_pool(graph, op, "avg")


def lower_max_pool_2d(graph: Graph, op: Op, rounding: str) -> Step:
    return _lower_pool(graph, op, "max")


# --- ADD / MUL: element-wise with broadcasting ------------------------------------------

_MAX_BROADCAST_RANK = 4  # TFLM's BroadcastMul4DSlow (and BroadcastAdd4DSlow) index 4-D


def _operand(graph: Graph, op: Op, position: int) -> Tensor:
    """An int8 per-tensor input that may be an activation or a constant (the converter
    leaves a batch normalization's scale and offset as constant int8 vectors)."""
    t = _tensor(graph, op, position, "input")
    if not t.is_const:
        return _input(graph, op, position)
    if t.dtype != "int8":
        raise op.error(f"constant input {t.name!r} is {t.dtype}; only int8 is supported")
    if not t.scales or not t.per_tensor:
        raise op.error(f"constant input {t.name!r} needs per-tensor int8 quantization")
    return t


def _broadcast_loops(op: Op, ins: Sequence[Tensor], out: Tensor) -> list[tuple[int, tuple[int, ...]]]:
    """Loops over the output in memory order as ``(size, (stride in each input, ...))``,
    numpy broadcasting rules (TFLM's NdArrayDescsForElementwiseBroadcast): an input
    dimension of 1 facing a larger output dimension has stride 0. Dimensions of size 1
    are dropped and neighbours that are contiguous in every input are merged, so an
    element-wise op is one loop and (1, T, C) * (C,) two."""
    rank = len(out.shape)
    try:
        shape = tuple(int(d) for d in np.broadcast_shapes(*(t.shape for t in ins)))
    except ValueError:
        shape = None
    if shape != out.shape:
        raise op.error(
            f"shapes {', '.join(t.describe() for t in ins)} do not broadcast to {out.describe()}"
        )
    broadcast = any(t.shape != out.shape for t in ins)
    if broadcast and rank > _MAX_BROADCAST_RANK:
        raise op.error(
            f"broadcasting to {rank} dimensions is not supported (TFLM broadcasts up to "
            f"{_MAX_BROADCAST_RANK})"
        )
    extended = [(1,) * (rank - len(t.shape)) + tuple(t.shape) for t in ins]
    dims: list[tuple[int, tuple[int, ...]]] = []
    for d in range(rank):
        size = out.shape[d]
        if size == 1:
            continue
        strides = tuple(
            0 if e[d] == 1 else int(np.prod(e[d + 1 :], dtype=np.int64)) for e in extended
        )
        if dims:
            prev_size, prev_strides = dims[-1]
            if all(p == s * size for p, s in zip(prev_strides, strides)):
                dims[-1] = (prev_size * size, strides)
                continue
        dims.append((size, strides))
    return dims


def _binary_step(
    op: Op, ins: Sequence[Tensor], out: Tensor, what: str, element: Callable[[str, str], str]
) -> Step:
    """A compute step for an element-wise int8 op of two inputs. ``element(a, b)`` is the
    C computing ``int32_t acc`` (clamped, ready to store) from the int8 expressions
    ``a`` and ``b``. Constant inputs become ``static const`` arrays of the function."""
    dims = _broadcast_loops(op, ins, out)
    activations = [t for t in ins if not t.is_const]
    if not activations:
        raise op.error("both inputs are constants")

    def emit(fn: str) -> CFunction:
        data, nbytes, names = "", 0, []
        params = []
        for i, t in enumerate(ins):
            if t.is_const:
                names.append(f"{fn}_in{i + 1}")
                data += c_array("int8_t", names[-1], t.data.reshape(-1), 16)
                nbytes += t.size
            else:
                names.append(f"in{i + 1}")
                params.append(f"const int8_t *restrict in{i + 1}")
        refs = [
            f"{name}[{_index([(f'k{k}', s[i]) for k, (_, s) in enumerate(dims) if s[i]])}]"
            for i, name in enumerate(names)
        ]
        loops = _for_loops([(f"k{k}", size) for k, (size, _) in enumerate(dims)], element(*refs) + "*o++ = (int8_t)acc;\n")
        sign = " * " if op.name == "MUL" else " + "
        func = (
            f"/* {op.name} (op #{op.index}): {sign.join(t.describe() for t in ins)} -> {out.describe()}"
            f"{', broadcast' if any(t.shape != out.shape for t in ins) else ''}, {what} */\n"
            f"static void {fn}({', '.join(params)}, int8_t *restrict out) {{\n"
            "  int8_t *o = out;\n" + _indent(loops, 2) + "}\n"
        )
        return CFunction(data, func, nbytes)

    return Step(op, "compute", tuple(t.index for t in activations), out.index, emit)


def lower_add(graph: Graph, op: Op, rounding: str) -> Step:
    o = _options(op)
    a, b, out = _operand(graph, op, 0), _operand(graph, op, 1), _output(graph, op)
    act = _fused(op, o.fusedActivationFunction)
    amin, amax = fp.activation_range(act, out.scale, out.zero_point)
    # CalculateOpDataAdd: both inputs rescaled to twice the larger scale, << 20.
    left_shift = 20
    twice_max = 2 * float(max(np.float32(a.scale), np.float32(b.scale)))
    m1, s1 = fp.quantize_multiplier(a.scale / twice_max, rounding)
    m2, s2 = fp.quantize_multiplier(b.scale / twice_max, rounding)
    real_out = twice_max / ((1 << left_shift) * out.scale)
    if not 0 < real_out < 1:
        raise op.error(f"output rescale {real_out} is not in (0, 1)")
    mo, so = fp.quantize_multiplier(real_out, rounding)
    if s1 > 0 or s2 > 0 or so > 0:
        raise op.error("rescale multipliers must be smaller than one")
    scale_up = 1 << left_shift

    def element(x1: str, x2: str) -> str:
        # AddFunc: the same arithmetic on the broadcast and the element-wise path.
        return (
            f"const int32_t x1 = aot_mbqm(((int32_t){x1}{_plus(-a.zero_point)}) * {scale_up}, "
            f"{m1}, {s1});\n"
            f"const int32_t x2 = aot_mbqm(((int32_t){x2}{_plus(-b.zero_point)}) * {scale_up}, "
            f"{m2}, {s2});\n"
            "int32_t acc = x1 + x2;\n"
            + _requant_lines(str(mo), str(so), out.zero_point, amin, amax)
        )

    return _binary_step(op, (a, b), out, f"{_ACTIVATIONS[act]} [{amin}, {amax}]", element)


def lower_mul(graph: Graph, op: Op, rounding: str) -> Step:
    o = _options(op)
    a, b, out = _operand(graph, op, 0), _operand(graph, op, 1), _output(graph, op)
    act = _fused(op, o.fusedActivationFunction)
    amin, amax = fp.activation_range(act, out.scale, out.zero_point)
    # CalculateOpDataMul: double(input1) * double(input2) / double(output).
    mult, shift = fp.quantize_multiplier(a.scale * b.scale / out.scale, rounding)

    def element(x1: str, x2: str) -> str:
        # MulElementwise / BroadcastMul4DSlow: one requantization of the product.
        return (
            f"int32_t acc = ((int32_t){x1}{_plus(-a.zero_point)}) * "
            f"((int32_t){x2}{_plus(-b.zero_point)});\n"
            + _requant_lines(c_int(mult), c_int(shift), out.zero_point, amin, amax)
        )

    return _binary_step(op, (a, b), out, f"{_ACTIVATIONS[act]} [{amin}, {amax}]", element)


# --- PAD / PADV2 ------------------------------------------------------------------------

_MAX_PAD_RANK = 5  # reference_ops::PadKernelMaxDimensionCount


def lower_pad(graph: Graph, op: Op, rounding: str) -> Step:
    inp, out = _input(graph, op), _output(graph, op)
    if len(op.inputs) not in (2, 3):
        raise op.error(f"expected 2 or 3 inputs, got {len(op.inputs)}")
    rank = len(inp.shape)
    if rank > _MAX_PAD_RANK:
        raise op.error(f"input {inp.describe()} has more than {_MAX_PAD_RANK} dimensions")
    paddings_t = _tensor(graph, op, 1, "paddings")
    if not paddings_t.is_const or paddings_t.dtype != "int32":
        raise op.error("paddings must be a constant int32 tensor (TFLM)")
    if paddings_t.size != 2 * len(out.shape) or len(out.shape) != rank:
        raise op.error(f"paddings {paddings_t.describe()} do not fit {inp.describe()} -> {out.describe()}")
    pads = [tuple(int(v) for v in row) for row in paddings_t.data.reshape(rank, 2)]
    if any(p < 0 for row in pads for p in row):
        raise op.error(f"negative paddings {pads} are not supported")
    for d in range(rank):
        if out.shape[d] != inp.shape[d] + pads[d][0] + pads[d][1]:
            raise op.error(f"output {out.describe()} is not {inp.describe()} padded by {pads}")
    if len(op.inputs) == 3 and op.inputs[2] >= 0:
        # PADV2: the padding value is given; TFLM wants it quantized as the output.
        cv = _tensor(graph, op, 2, "constant_values")
        if not cv.is_const or cv.dtype != "int8" or cv.size != 1:
            raise op.error("constant_values must be a constant int8 scalar")
        if not cv.scales or cv.zero_point != out.zero_point or cv.scale != out.scale:
            raise op.error("constant_values are not quantized as the output (TFLM rejects this)")
        pad_value, source = int(cv.data.reshape(-1)[0]), "constant_values"
    else:
        # PAD on int8: the output zero point, which represents 0.0.
        pad_value, source = out.zero_point, "output zero point"
    # The input is copied as it is (no requantization): TFLM copies raw values too.
    padded = [d for d in range(rank) if pads[d] != (0, 0)]
    inner = padded[-1] if padded else -1  # rows of this dimension are contiguous runs
    run = int(np.prod(inp.shape[inner:], dtype=np.int64)) if padded else inp.size
    out_strides = [int(np.prod(out.shape[d + 1 :], dtype=np.int64)) for d in range(rank)]
    in_strides = [int(np.prod(inp.shape[d + 1 :], dtype=np.int64)) for d in range(rank)]
    loops = [d for d in range(max(inner, 0)) if inp.shape[d] > 1]
    start = sum(pads[d][0] * out_strides[d] for d in range(rank))

    def emit(fn: str) -> CFunction:
        dst = " + ".join(
            [v for v in (_index([(f"k{d}", out_strides[d]) for d in loops]), str(start)) if v != "0"]
        )
        src = _index([(f"k{d}", in_strides[d]) for d in loops])
        dst = f"out + {dst}" if dst else "out"
        src = f"in + {src}" if src != "0" else "in"
        copy = _for_loops([(f"k{d}", inp.shape[d]) for d in loops], f"memcpy({dst}, {src}, {run});\n")
        fill = (
            f"  memset(out, {pad_value & 0xFF}, {out.size});  /* int8 {pad_value} everywhere */\n"
            if padded else ""
        )
        func = (
            f"/* {op.name} (op #{op.index}): {inp.describe()} -> {out.describe()}, paddings "
            f"{[list(p) for p in pads]}, value {pad_value} ({source}) */\n"
            f"static void {fn}(const int8_t *restrict in, int8_t *restrict out) {{\n"
            + fill
            + _indent(copy, 2)
            + "}\n"
        )
        return CFunction("", func, 0)

    return Step(op, "compute", (inp.index,), out.index, emit)


# --- CONCATENATION ----------------------------------------------------------------------


def lower_concatenation(graph: Graph, op: Op, rounding: str) -> Step:
    o = _options(op)
    out = _output(graph, op)
    if o.fusedActivationFunction != 0:
        raise op.error("fused activation on CONCATENATION is not supported (TFLM rejects it)")
    ins = [_input(graph, op, i) for i in range(len(op.inputs))]
    rank = len(out.shape)
    axis = o.axis + rank if o.axis < 0 else o.axis
    if not 0 <= axis < rank:
        raise op.error(f"axis {o.axis} out of range for {out.describe()}")
    for t in ins:
        # TFLM's ConcatenationPrepare requires identical int8 quantization: it does
        # not requantize. The converter inserts QUANTIZE ops where scales differ.
        if t.scale != out.scale or t.zero_point != out.zero_point:
            raise op.error(
                f"input {t.name!r} quantization ({t.scale}, {t.zero_point}) differs from the "
                f"output's ({out.scale}, {out.zero_point}); TFLM rejects this"
            )
        if len(t.shape) != rank or any(
            t.shape[d] != out.shape[d] for d in range(rank) if d != axis
        ):
            raise op.error(f"input {t.describe()} does not fit output {out.describe()}")
    if sum(t.shape[axis] for t in ins) != out.shape[axis]:
        raise op.error("input sizes along the axis do not add up to the output's")
    outer = int(np.prod(out.shape[:axis], dtype=np.int64))
    chunks = [int(np.prod(t.shape[axis:], dtype=np.int64)) for t in ins]
    total = sum(chunks)

    def emit(fn: str) -> CFunction:
        params = ", ".join(f"const int8_t *restrict in{i}" for i in range(len(ins)))
        copies = ""
        offset = 0
        for i, n in enumerate(chunks):
            copies += f"    memcpy(out + i * {total} + {offset}, in{i} + i * {n}, {n});\n"
            offset += n
        func = (
            f"/* CONCATENATION (op #{op.index}): {len(ins)} inputs -> {out.describe()} "
            f"along axis {axis} */\n"
            f"static void {fn}({params}, int8_t *restrict out) {{\n"
            f"  for (int i = 0; i < {outer}; ++i) {{\n" + copies + "  }\n}\n"
        )
        return CFunction("", func, 0)

    return Step(op, "compute", tuple(t.index for t in ins), out.index, emit)


# --- LOGISTIC / QUANTIZE: 256-entry tables ----------------------------------------------


def _table_step(op: Op, inp: Tensor, out: Tensor, table: list[int], what: str) -> Step:
    def emit(fn: str) -> CFunction:
        data = c_array("int8_t", f"{fn}_table", table, 16)
        func = (
            f"/* {op.name} (op #{op.index}): {inp.describe()} -> {out.describe()}; {what} */\n"
            f"static void {fn}(const int8_t *restrict in, int8_t *restrict out) {{\n"
            f"  for (int i = 0; i < {out.size}; ++i) out[i] = {fn}_table[in[i] + 128];\n"
            "}\n"
        )
        return CFunction(data, func, 256)

    return Step(op, "compute", (inp.index,), out.index, emit)


def lower_logistic(graph: Graph, op: Op, rounding: str) -> Step:
    inp, out = _input(graph, op), _output(graph, op)
    if inp.size != out.size:
        raise op.error("input and output sizes differ")
    if out.zero_point != -128:
        raise op.error(f"output zero point must be -128 (TFLM), got {out.zero_point}")
    try:
        table = fp.logistic_table(inp.scale, inp.zero_point, rounding)
    except ValueError as exc:
        raise op.error(str(exc)) from None
    # Every int8 input maps to one output, so TFLM's fixed-point evaluation
    # (gemmlowp::logistic in Q4.27) is run here, once per input value.
    return _table_step(op, inp, out, table, "table of TFLM's fixed-point logistic")


def lower_quantize(graph: Graph, op: Op, rounding: str) -> Step:
    src = _tensor(graph, op, 0, "input")
    if src.dtype != "int8":
        raise op.error(
            f"QUANTIZE from {src.dtype} is not supported: the generated runtime has int8 "
            "input and output only (convert with inference_input_type=tf.int8)"
        )
    inp, out = _input(graph, op), _output(graph, op)
    if inp.size != out.size:
        raise op.error("input and output sizes differ")
    table = fp.requantize_table(inp.scale, inp.zero_point, out.scale, out.zero_point, rounding)
    return _table_step(op, inp, out, table, "int8 requantization table")


# --- RESHAPE / EXPAND_DIMS / SQUEEZE ----------------------------------------------------


def lower_reshape(graph: Graph, op: Op, rounding: str) -> Step:
    inp, out = _input(graph, op), _output(graph, op)
    if inp.size != out.size:
        raise op.error(f"{inp.describe()} and {out.describe()} differ in size")
    return Step(op, "alias", (inp.index,), out.index)


LOWERINGS: dict[str, Callable[[Graph, Op, str], Step]] = {
    "CONV_2D": lower_conv_2d,
    "DEPTHWISE_CONV_2D": lower_depthwise_conv_2d,
    "FULLY_CONNECTED": lower_fully_connected,
    "MEAN": lower_mean,
    "AVERAGE_POOL_2D": lower_average_pool_2d,
    "MAX_POOL_2D": lower_max_pool_2d,
    "ADD": lower_add,
    "MUL": lower_mul,
    "PAD": lower_pad,
    "PADV2": lower_pad,
    "REDUCE_MAX": lower_reduce_max,
    "CONCATENATION": lower_concatenation,
    "LOGISTIC": lower_logistic,
    "QUANTIZE": lower_quantize,
    "RESHAPE": lower_reshape,
    "EXPAND_DIMS": lower_reshape,
    "SQUEEZE": lower_reshape,
}
"""Supported builtin ops and their lowerings."""


def lower(graph: Graph, op: Op, rounding: str) -> Step:
    try:
        lowering = LOWERINGS[op.name]
    except KeyError:
        raise op.error(
            f"op is not supported by the AOT generator (supported: {', '.join(sorted(LOWERINGS))})"
        ) from None
    return lowering(graph, op, rounding)
