"""``generate()``: an int8 ``.tflite`` model in, ``<prefix>.c`` and ``<prefix>.h`` out."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

import edge_ecg
from edge_ecg.aot import fixedpoint as fp
from edge_ecg.aot import kernels, planner
from edge_ecg.aot.graph import AotError, Graph, Tensor, parse
from edge_ecg.runfolder import sha256_bytes

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# TFLite Micro's MultiplyByQuantizedMultiplier, written for the generated C.
_MBQM_C = {
    "double": """\
/* TFLite Micro's MultiplyByQuantizedMultiplier, double-rounding variant (the default
 * build, TFLITE_SINGLE_ROUNDING unset): gemmlowp's SaturatingRoundingDoublingHighMul,
 * then RoundingDivideByPOT (nearest, ties away from zero). The high multiply is
 * floor((a * b + 2^30) / 2^31): TFLM's nudge of 2^30 or 1 - 2^30 and division
 * truncating toward zero give the same value for every product, and its one
 * saturating case (a = b = INT32_MIN) cannot occur because multipliers are
 * nonnegative. One SMLAL and a shift on a 32-bit core, as CMSIS-NN computes it. Like
 * TFLite, this relies on >> of a negative integer being an arithmetic shift. */
static inline int32_t aot_mbqm(int32_t x, int32_t multiplier, int shift) {
  const int left = shift > 0 ? shift : 0;
  const int right = shift > 0 ? 0 : -shift;
  const int64_t ab = (int64_t)(int32_t)((uint32_t)x << left) * multiplier;
  const int32_t high = (int32_t)((ab + ((int64_t)1 << 30)) >> 31);
  const int32_t mask = (int32_t)((1u << right) - 1u);
  const int32_t remainder = high & mask;
  const int32_t threshold = (mask >> 1) + (high < 0 ? 1 : 0);
  return (high >> right) + (remainder > threshold ? 1 : 0);
}
""",
    "single": """\
/* TFLite Micro's MultiplyByQuantizedMultiplier, single-rounding variant
 * (TFLITE_SINGLE_ROUNDING=1): one 64-bit product, add half, arithmetic shift. */
static inline int32_t aot_mbqm(int32_t x, int32_t multiplier, int shift) {
  const int total_shift = 31 - shift;
  const int64_t round = (int64_t)1 << (total_shift - 1);
  return (int32_t)(((int64_t)x * multiplier + round) >> total_shift);
}
""",
}


def _c_float(x: float) -> str:
    text = "%.9g" % float(np.float32(x))  # 9 significant digits round-trip a float32
    if "." not in text and "e" not in text and "inf" not in text:
        text += ".0"
    return text + "f"


def _check_io(graph: Graph) -> tuple[Tensor, Tensor]:
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise AotError(
            f"model has {len(graph.inputs)} inputs and {len(graph.outputs)} outputs; "
            "exactly one of each is supported"
        )
    tin, tout = graph.tensors[graph.inputs[0]], graph.tensors[graph.outputs[0]]
    for role, t in (("input", tin), ("output", tout)):
        if t.dtype != "int8":
            raise AotError(
                f"model {role} {t.name!r} is {t.dtype}; only int8 input and output are supported "
                "(convert with inference_input_type=inference_output_type=tf.int8)"
            )
        if not t.scales or not t.per_tensor:
            raise AotError(f"model {role} {t.name!r} needs per-tensor quantization")
        if not t.shape:
            raise AotError(f"model {role} {t.name!r} is a scalar")
    if tin.index == tout.index:
        raise AotError("model output is its input")
    return tin, tout


def _lower_all(graph: Graph, rounding: str) -> list[kernels.Step]:
    if not graph.ops:
        raise AotError("model has no ops")
    fp.check_rounding(rounding)
    _check_io(graph)
    steps = []
    written = {graph.inputs[0]}
    for op in graph.ops:
        step = kernels.lower(graph, op, rounding)
        for t in step.inputs:
            if t not in written:
                raise op.error(f"reads tensor {graph.tensors[t].name!r} before it is written")
        if step.output in written:
            raise op.error(f"writes tensor {graph.tensors[step.output].name!r} twice")
        written.add(step.output)
        steps.append(step)
    if graph.outputs[0] not in written:
        raise AotError("no op writes the model output")
    return steps


def memory_plan(
    tflite_bytes: bytes, *, alignment: int = 16, rounding: str = "double"
) -> planner.MemoryPlan:
    """The static memory plan :func:`generate` would use for this model."""
    graph = parse(bytes(tflite_bytes))
    return planner.plan(graph, _lower_all(graph, rounding), alignment)


def generate(
    tflite_bytes: bytes,
    out_dir: str | Path,
    *,
    prefix: str = "ecg_model",
    rounding: str = "double",
    alignment: int = 16,
) -> dict:
    """Write ``<prefix>.c`` and ``<prefix>.h`` computing the int8 model bit-exactly as
    TFLite Micro's reference kernels; return a report.

    ``rounding`` selects TFLite's MultiplyByQuantizedMultiplier variant: ``"double"``
    (TFLite Micro's default build and the pip ``tflite-micro`` package) or
    ``"single"`` (builds with ``TFLITE_SINGLE_ROUNDING=1``). ``alignment`` is the
    byte alignment of every tensor in the activation buffer.

    The C file holds the weights and biases (``static const``), one ``static``
    function per op with shapes and quantization constants as literals, one static
    activation buffer with offsets from :func:`memory_plan`, and the entry point
    ``int <prefix>_invoke(const int8_t *input, int8_t *output)``. The model input lives
    in the activation buffer (``<prefix>_input()``; its bytes are reused once the
    last op reading it has run), the output is written to the caller's buffer.

    Returns the report: ``files`` (paths), ``model_sha256``, ``generator_version``,
    ``rounding``, ``activation_bytes`` (the buffer, input included: the model's RAM but the stack),
    ``input_offset`` (the input tensor's offset in it), ``weights_bytes`` (all constant
    data: weights, biases, multipliers, shifts, tables), ``naive_activation_bytes``
    (no reuse), ``input``/``output`` (shape, scale, zero point, bytes), ``ops`` (one
    entry per op: index, name, shapes, C function or None for an alias, MACs) and
    ``memory_plan`` (one entry per allocation). JSON-serializable.

    Raises:
        AotError: an op, type or quantization scheme is not supported (the message
            names the op and its index); nothing is written then.
        ValueError: a bad ``prefix``, ``rounding`` or ``alignment``.
    """
    if not isinstance(prefix, str) or not _IDENTIFIER.match(prefix):
        raise ValueError(f"prefix must be a C identifier, got {prefix!r}")
    fp.check_rounding(rounding)
    if alignment < 1 or alignment & (alignment - 1):
        raise ValueError(f"alignment must be a power of two, got {alignment!r}")
    model = bytes(tflite_bytes)
    graph = parse(model)
    steps = _lower_all(graph, rounding)
    plan = planner.plan(graph, steps, alignment)
    tin, tout = _check_io(graph)
    sha = sha256_bytes(model)  # the model hash, as export.json and info% give it
    P = prefix.upper()
    width = max(2, len(str(len(graph.ops) - 1)))

    def where(t: int) -> str:
        a = plan.location(t)
        if a.binding == "output":
            return "output"
        return f"arena + {a.offset}"

    input_offset = plan.input.offset

    functions, calls, ops_report = [], [], []
    data_bytes = 0
    for s, step in enumerate(steps):
        op = step.op
        out_t = graph.tensors[step.output]
        entry = {
            "index": op.index,
            "op": op.name,
            "inputs": [list(graph.tensors[t].shape) for t in step.inputs],
            "output": list(out_t.shape),
            "function": None,
            **step.summary,
        }
        if step.kind == "alias":
            src = graph.tensors[step.inputs[0]]
            if s in plan.copies:
                calls.append(
                    f"  memcpy({where(step.output)}, {where(step.inputs[0])}, {out_t.size});"
                    f"  /* op #{op.index} {op.name}: copy */"
                )
            else:
                calls.append(
                    f"  /* op #{op.index} {op.name}: {src.describe()} -> {out_t.describe()}, "
                    "same bytes */"
                )
        else:
            fn = f"op{op.index:0{width}d}_{op.name.lower()}"
            # The planner put this op's output over its input: the variant without restrict.
            code = step.emit_in_place(fn) if s in plan.in_place else step.emit(fn)
            data_bytes += code.data_bytes
            # Each op stays its own function (AOT_OP): inlined into the invoke, the kernels'
            # register allocation came out worse (spills in the inner loops) and the ops
            # could not be timed apart. GCC gets noipa, not just noinline: with noinline
            # alone, GCC 12 -O2 (host and arm-none-eabi) computed a wrong CONCATENATION
            # in random architecture 3 of tests/test_aot.py (not root-caused; it went away
            # without inter-procedural analysis and at -O0).
            function = code.function.replace(f"static void {fn}(", f"AOT_OP void {fn}(", 1)
            functions.append((code.data + "\n" if code.data else "") + function)
            args = ", ".join([where(t) for t in step.inputs] + [where(step.output)])
            calls.append(f"  {fn}({args});\n  AOT_PROFILE({op.index});")
            entry["function"] = fn
            entry["in_place"] = s in plan.in_place
        ops_report.append(entry)

    arena_bytes = plan.arena_bytes

    def banner(name: str) -> str:
        return (
            f"/* {name}: ahead-of-time C runtime for an int8 TFLite model.\n"
            " *\n"
            " * generated, do not edit.\n"
            f" * generator: edge_ecg.aot {edge_ecg.__version__}\n"
            f" * model: sha256 {sha}\n"
            f" *        {len(graph.ops)} ops, input {tin.describe()}, output {tout.describe()}\n"
            f" * arithmetic: TFLite Micro reference kernels, {rounding} rounding\n"
            f" * activation buffer: {arena_bytes} bytes; constant data: {data_bytes} bytes\n"
            " */\n"
        )

    header = banner(f"{prefix}.h") + (
        f"#ifndef {P}_H_\n#define {P}_H_\n\n#include <stdint.h>\n\n"
        "#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n"
        "/* Quantized values: real = (q - ZERO_POINT) * SCALE. */\n"
        f"#define {P}_INPUT_SIZE {tin.size}\n"
        f"#define {P}_INPUT_RANK {len(tin.shape)}\n"
        f"#define {P}_INPUT_SCALE {_c_float(tin.scale)}\n"
        f"#define {P}_INPUT_ZERO_POINT ({tin.zero_point})\n"
        f"#define {P}_OUTPUT_SIZE {tout.size}\n"
        f"#define {P}_OUTPUT_RANK {len(tout.shape)}\n"
        f"#define {P}_OUTPUT_SCALE {_c_float(tout.scale)}\n"
        f"#define {P}_OUTPUT_ZERO_POINT ({tout.zero_point})\n"
        f"#define {P}_ACTIVATION_BYTES {arena_bytes} /* all of the model's RAM but the stack, input included */\n"
        f"#define {P}_OP_COUNT {len(graph.ops)}\n"
        f"#define {P}_CONSTANT_BYTES {data_bytes}\n\n"
        f"#define {P}_OK 0\n"
        f"#define {P}_ERROR_NULL_POINTER 1\n\n"
        f"/* Input and output ranks and shapes (row-major, int8), for hosts. */\n"
        f"extern const int32_t {prefix}_input_rank;\n"
        f"extern const int32_t {prefix}_input_shape[{P}_INPUT_RANK];\n"
        f"extern const int32_t {prefix}_output_rank;\n"
        f"extern const int32_t {prefix}_output_shape[{P}_OUTPUT_RANK];\n\n"
        f"/* The model's input tensor, {P}_INPUT_SIZE bytes inside the activation buffer (as\n"
        " * TFLite Micro's input lives in its arena). Fill it, then invoke with it as input:\n"
        " * no copy is made. Later ops reuse these bytes, so refill it before every invoke. */\n"
        f"int8_t *{prefix}_input(void);\n\n"
        f"/* Runs the model on {P}_INPUT_SIZE int8 values, writing {P}_OUTPUT_SIZE.\n"
        f" * `input` is {prefix}_input() (no copy) or any other buffer (copied into it first).\n"
        f" * Returns {P}_OK, or {P}_ERROR_NULL_POINTER. The output must not overlap the input.\n"
        " * Not reentrant: the tensors live in one static buffer. */\n"
        f"int {prefix}_invoke(const int8_t *input, int8_t *output);\n\n"
        "/* Builds with -DECG_MODEL_PROFILE call this (defined by the caller) after each op\n"
        " * with the op's index in the .tflite, to time the ops. */\n"
        f"void {prefix}_profile_op(int op_index);\n\n"
        "#ifdef __cplusplus\n}\n#endif\n\n"
        f"#endif /* {P}_H_ */\n"
    )

    body = "\n".join(functions)
    parts = [
        banner(f"{prefix}.c"),
        f'#include <stddef.h>\n#include <stdint.h>\n#include <string.h>\n\n#include "{prefix}.h"\n\n',
        f"const int32_t {prefix}_input_rank = {P}_INPUT_RANK;\n"
        f"const int32_t {prefix}_output_rank = {P}_OUTPUT_RANK;\n"
        f"const int32_t {prefix}_input_shape[{P}_INPUT_RANK] = {{"
        + ", ".join(str(d) for d in tin.shape)
        + "};\n",
        f"const int32_t {prefix}_output_shape[{P}_OUTPUT_RANK] = {{"
        + ", ".join(str(d) for d in tout.shape)
        + "};\n\n",
    ]
    if "aot_mbqm(" in body or "aot_out(" in body:
        parts.append(_MBQM_C[rounding] + "\n")
    parts.append(
        "#if defined(__clang__)\n#define AOT_OP static __attribute__((noinline))\n"
        "#elif defined(__GNUC__) && __GNUC__ >= 8\n#define AOT_OP static __attribute__((noipa))\n"
        "#else\n#define AOT_OP static\n#endif\n\n"
    )
    parts.append(kernels.helpers_for(body))
    parts.append(
        f"/* The input and all intermediate tensors, at offsets planned at generation time; each\n"
        f" * offset is a multiple of {alignment}. The union aligns the buffer on any C99\n"
        f" * compiler, the attribute to {alignment} bytes on GCC and Clang. */\n"
        "#if defined(__GNUC__)\n"
        f"#define {P}_ARENA_ALIGN __attribute__((aligned({alignment})))\n"
        "#else\n"
        f"#define {P}_ARENA_ALIGN\n"
        "#endif\n"
        "static union {\n"
        f"  int8_t bytes[{arena_bytes}];\n"
        "  int64_t align_int64;\n"
        "  double align_double;\n"
        f"}} aot_arena {P}_ARENA_ALIGN;\n\n"
    )
    parts.append(body)
    invoke = (
        f"\nint8_t *{prefix}_input(void) {{\n  return aot_arena.bytes + {input_offset};\n}}\n\n"
        f"#if defined({P}_PROFILE)\n#define AOT_PROFILE(op_index) {prefix}_profile_op(op_index)\n"
        "#else\n#define AOT_PROFILE(op_index) ((void)0)\n#endif\n"
    )
    invoke += f"\nint {prefix}_invoke(const int8_t *input, int8_t *output) {{\n"
    invoke += "  int8_t *const arena = aot_arena.bytes;\n"
    invoke += f"  if (input == NULL || output == NULL) return {P}_ERROR_NULL_POINTER;\n"
    invoke += (
        f"  /* The input tensor is arena + {input_offset}; ops after its last reader overwrite it. */\n"
        f"  if (input != arena + {input_offset}) memcpy(arena + {input_offset}, input, {tin.size});\n"
    )
    invoke += "\n".join(calls) + f"\n  return {P}_OK;\n}}\n"
    parts.append(invoke)
    source = re.sub(r"\n{3,}", "\n\n", "".join(parts))

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    c_path, h_path = out / f"{prefix}.c", out / f"{prefix}.h"
    c_path.write_text(source, encoding="ascii")
    h_path.write_text(header, encoding="ascii")

    return {
        "files": {"c": str(c_path), "h": str(h_path)},
        "prefix": prefix,
        "generator_version": edge_ecg.__version__,
        "model_sha256": sha,
        "rounding": rounding,
        "activation_bytes": arena_bytes,
        "weights_bytes": data_bytes,
        "alignment": alignment,
        "naive_activation_bytes": plan.naive_bytes,
        "input_offset": input_offset,
        "input": {
            "shape": list(tin.shape),
            "scale": tin.scale,
            "zero_point": tin.zero_point,
            "bytes": tin.size,
        },
        "output": {
            "shape": list(tout.shape),
            "scale": tout.scale,
            "zero_point": tout.zero_point,
            "bytes": tout.size,
        },
        "ops": ops_report,
        "memory_plan": [
            {
                "tensors": list(a.names),
                "offset": a.offset,
                "size": a.size,
                "first": a.first,
                "last": a.last,
                "binding": a.binding,
            }
            for a in plan.allocations
        ],
    }
