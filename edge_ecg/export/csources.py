"""C/C++ sources for the firmware, following TensorFlow Lite Micro conventions.

Four files, all generated from the model bytes and a few settings and nothing else
(no dates, no paths), so the same inputs always give byte-identical files:

* ``model_data.h`` / ``model_data.cc``: the flatbuffer as ``g_ecg_model_data`` (16-byte
  aligned, as TFLM reads it in place) and its length ``g_ecg_model_data_len``.
* ``model_ops.h``: ``ecg_register_ops(tflite::MicroMutableOpResolver<N>&)`` registering
  exactly the model's operators, N = their number (``kEcgOpCount``).
* ``model_config.h``: C99-compatible macros (prefix ``ECG_``) describing the model's
  input and output, the classes and decision thresholds, the standardization, and
  the tensor arena size.

Each starts with a banner naming the generator and the model's SHA-256.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from edge_ecg import __version__
from edge_ecg.export.convert import TFLM_RESOLVER, ExportError, check_tflite, ops_in_model
from edge_ecg.runfolder import sha256_bytes

SOURCE_FILES = ("model_data.h", "model_data.cc", "model_ops.h", "model_config.h")
BYTES_PER_LINE = 12


sha256 = sha256_bytes  # the model hash, computed in one place (edge_ecg.runfolder)


def c_float(value: float) -> str:
    """Shortest decimal float literal (with ``f``) that reads back as exactly the same float32."""
    x = np.float32(value)
    if not np.isfinite(x):
        raise ExportError(f"cannot write {value!r} as a C float constant")
    for digits in range(1, 10):
        text = f"{float(x):.{digits}g}"
        if np.float32(text) == x:
            break
    if "." not in text and "e" not in text:
        text += ".0"
    return text + "f"


def _banner(name: str, what: str, digest: str, size: int) -> str:
    return (
        f"/* {name}: {what}\n"
        " *\n"
        f" * Generator: edge-ecg {__version__}\n"
        f" * Model SHA-256: {digest} ({size} bytes)\n"
        " * This file is generated, do not edit.\n"
        " */\n\n"
    )


def _guard(name: str) -> str:
    return "EDGE_ECG_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper() + "_"


def _c_string(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_ .+/-]*", text):
        raise ExportError(f"name {text!r} has characters not allowed in the generated C strings")
    return f'"{text}"'


def _lead_display(name: str) -> str:
    from edge_ecg.data.leads import display_name  # aVR, not PTB-XL's AVR

    return display_name(str(name))


def _list(items: Sequence[str]) -> str:
    return "{ " + ", ".join(items) + " }"


def _int(value: int) -> str:
    return f"({value})" if value < 0 else str(value)


# --------------------------------------------------------------------------- the files


def model_data_h(digest: str, size: int) -> str:
    g = _guard("model_data.h")
    return (
        _banner("model_data.h", "the int8 ECG classifier as a TFLite flatbuffer array", digest, size)
        + f"#ifndef {g}\n#define {g}\n\n"
        "#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n"
        "/* The flatbuffer, 16-byte aligned; pass it to tflite::GetModel(). */\n"
        "extern const unsigned char g_ecg_model_data[];\n"
        "extern const unsigned int g_ecg_model_data_len;\n\n"
        "#ifdef __cplusplus\n}  /* extern \"C\" */\n#endif\n\n"
        f"#endif  /* {g} */\n"
    )


def model_data_cc(tflite_bytes: bytes, digest: str) -> str:
    data = bytes(tflite_bytes)
    lines = []
    for start in range(0, len(data), BYTES_PER_LINE):
        chunk = data[start : start + BYTES_PER_LINE]
        lines.append("    " + ", ".join(f"0x{b:02x}" for b in chunk) + ",")
    return (
        _banner("model_data.cc", "the int8 ECG classifier as a TFLite flatbuffer array", digest, len(data))
        + '#include "model_data.h"\n\n'
        "/* TFLite Micro reads the flatbuffer in place: keep it 16-byte aligned. */\n"
        "alignas(16) const unsigned char g_ecg_model_data[] = {\n"
        + "\n".join(lines)
        + "\n};\n"
        f"const unsigned int g_ecg_model_data_len = {len(data)};\n"
    )


def model_ops_h(ops: Sequence[str], digest: str, size: int) -> str:
    missing = [op for op in ops if op not in TFLM_RESOLVER]
    if missing:
        raise ExportError(f"the firmware resolver cannot register operator(s) {', '.join(missing)}")
    ops = sorted(ops)
    n = len(ops)
    g = _guard("model_ops.h")
    calls = "".join(f"  if (resolver.{TFLM_RESOLVER[op]}() != kTfLiteOk) return kTfLiteError;  // {op}\n" for op in ops)
    return (
        _banner("model_ops.h", "registers exactly the TFLite Micro operators the model uses", digest, size)
        + f"#ifndef {g}\n#define {g}\n\n"
        '#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"\n\n'
        f"// The model's {n} operators: {', '.join(ops)}.\n"
        f"constexpr int kEcgOpCount = {n};\n"
        f"using EcgOpResolver = tflite::MicroMutableOpResolver<{n}>;\n\n"
        "// Usage:\n"
        "//   static EcgOpResolver resolver;\n"
        "//   if (ecg_register_ops(resolver) != kTfLiteOk) { /* error */ }\n"
        f"static inline TfLiteStatus ecg_register_ops(tflite::MicroMutableOpResolver<{n}>& resolver) {{\n"
        + calls
        + "  return kTfLiteOk;\n}\n\n"
        f"#endif  // {g}\n"
    )


def model_config_h(
    tflite_bytes: bytes,
    digest: str,
    *,
    class_names: Sequence[str],
    thresholds: Sequence[float],
    lead_mean: Sequence[float],
    lead_std: Sequence[float],
    arena_bytes: int,
    arena_min_bytes: int | None = None,
    arena_targets: Mapping[str, int] | None = None,
    input_clip_sigma: float = 0.0,
    lead_names: Sequence[str] | None = None,
    sample_rate_hz: int | None = None,
    thresholds_note: str = "",
    output_kind: str = "probability",
    highpass: Sequence[float] | None = None,
    highpass_hz: float = 0.0,
) -> str:
    io = check_tflite(tflite_bytes)
    inp, out = io["inputs"][0], io["outputs"][0]
    _, samples, leads = inp["shape"]
    classes = out["shape"][-1]
    if len(class_names) != classes or len(thresholds) != classes:
        raise ExportError(f"{len(class_names)} class names and {len(thresholds)} thresholds for a model with {classes} outputs")
    if len(lead_mean) != leads or len(lead_std) != leads or (lead_names is not None and len(lead_names) != leads):
        raise ExportError(f"standardization for {len(lead_mean)} leads, the model takes {leads}")
    if not arena_bytes > 0:
        raise ExportError(f"arena size must be positive, got {arena_bytes}")
    if highpass is not None and len(highpass) != 5:
        raise ExportError(f"the high-pass needs 5 coefficients (b0, b1, b2, a1, a2), got {len(highpass)}")
    if arena_targets is not None and int(arena_targets.get("reference", arena_bytes)) != int(arena_bytes):
        raise ExportError(f"ECG_ARENA_BYTES is the reference figure: arena_bytes {arena_bytes} != arena_targets['reference'] "
                          f"{arena_targets['reference']}")
    from edge_ecg.export.convert import output_probabilities

    q_grid = np.arange(-128, 128, dtype=np.float32)
    probs = output_probabilities(q_grid, out["scale"], out["zero_point"], output_kind)  # each int8 step's probability
    thresholds_q = []
    for t in thresholds:
        above = np.flatnonzero(probs >= np.float32(t))
        thresholds_q.append(int(q_grid[above[0]]) if len(above) else 128)

    g = _guard("model_config.h")
    lines = [
        _banner("model_config.h", "what the firmware needs to know about the ECG model (C99 and C++)", digest, len(tflite_bytes)),
        f"#ifndef {g}\n#define {g}\n",
        "/* Input: one record of ECG_INPUT_SAMPLES samples x ECG_INPUT_LEADS leads, int8,",
        " * sample-major (all leads of sample 0, then sample 1, ...). Each value x of lead l:",
        " *   if ECG_HIGHPASS_SOS is defined: x = the window's lead l high-pass filtered (ee_preprocess.h)",
        " *   z = (x - ECG_LEAD_MEAN[l]) / ECG_LEAD_STD[l]        (standardize; x in the units of the training data, PTB-XL: mV)",
        " *   if ECG_INPUT_CLIP_SIGMA > 0: clip z to +-ECG_INPUT_CLIP_SIGMA",
        " *   q = round(z / ECG_INPUT_SCALE) + ECG_INPUT_ZERO_POINT, clipped to [-128, 127] */",
        f"#define ECG_INPUT_SAMPLES {samples}",
        f"#define ECG_INPUT_LEADS {leads}" + (f"  /* {', '.join(_lead_display(n) for n in lead_names)} (ECG_LEAD_NAMES) */" if lead_names is not None else ""),
        "/* The firmware core's names (firmware/core/ee_config.h, built with -DEE_HAVE_MODEL_CONFIG=1). */",
        f"#define EE_INPUT_SAMPLES {samples}",
        f"#define EE_INPUT_LEADS {leads}",
        f"#define EE_INPUT_BYTES {samples * leads}  /* ECG_INPUT_SAMPLES * ECG_INPUT_LEADS */",
        f"#define EE_OUTPUT_COUNT {classes}",
        f"#define ECG_INPUT_SCALE {c_float(inp['scale'])}",
        f"#define ECG_INPUT_ZERO_POINT {_int(inp['zero_point'])}",
    ]
    if sample_rate_hz is not None:
        lines.append(f"#define ECG_SAMPLE_RATE_HZ {int(sample_rate_hz)}")
    lines += [
        f"#define ECG_INPUT_CLIP_SIGMA {c_float(input_clip_sigma)}  /* 0 = no clipping */",
        "",
        "/* Initializers, one value per lead, e.g. static const float m[ECG_INPUT_LEADS] = ECG_LEAD_MEAN; */",
        f"#define ECG_LEAD_MEAN {_list([c_float(v) for v in lead_mean])}",
        f"#define ECG_LEAD_STD {_list([c_float(v) for v in lead_std])}",
    ]
    if highpass is not None:
        lines += [
            f"/* Zero-phase {highpass_hz:g} Hz Butterworth high-pass of each lead over the window, before standardizing:",
            " * static const float hp[5] = ECG_HIGHPASS_SOS; static float work[ECG_INPUT_SAMPLES];",
            " * params.highpass = hp; params.work = work; (ee_preprocess.h) */",
            f"#define ECG_HIGHPASS_HZ {c_float(highpass_hz)}",
            f"#define ECG_HIGHPASS_SOS {_list([c_float(v) for v in highpass])}  /* b0, b1, b2, a1, a2 (a0 = 1) */",
        ]
    if lead_names is not None:
        lines.append(f"#define ECG_LEAD_NAMES {_list([_c_string(_lead_display(n)) for n in lead_names])}  /* the input channels, in order */")
    lines += [
        "",
        "/* Output: ECG_NUM_CLASSES int8 values, v = (q - ECG_OUTPUT_ZERO_POINT) * ECG_OUTPUT_SCALE;",
        " * with ECG_OUTPUT_IS_LOGIT 1 they are logits and p = 1 / (1 + exp(-v)), else p = v.",
        " * Class c is present when p >= ECG_THRESHOLDS[c], or equivalently q >= ECG_THRESHOLDS_Q[c]",
        " * (128 = never), so a device needs no float math to decide. */",
        f"#define ECG_OUTPUT_IS_LOGIT {1 if output_kind == 'logit' else 0}",
        f"#define ECG_OUTPUT_SCALE {c_float(out['scale'])}",
        f"#define ECG_OUTPUT_ZERO_POINT {_int(out['zero_point'])}",
        f"#define ECG_NUM_CLASSES {classes}",
        f"#define ECG_CLASS_NAMES {_list([_c_string(n) for n in class_names])}",
    ]
    if thresholds_note:
        lines.append(f"/* Thresholds: {thresholds_note} */")
    lines += [
        f"#define ECG_THRESHOLDS {_list([c_float(t) for t in thresholds])}",
        f"#define ECG_THRESHOLDS_Q {_list([_int(q) for q in thresholds_q])}",
        "",
        "/* Tensor arena: declare it 16-byte aligned, alignas(16) uint8_t arena[ECG_ARENA_BYTES].",
        f" * Rule: {_arena_rule_comment()} */",
        f"#define ECG_ARENA_BYTES {int(arena_bytes)}",
    ]
    if arena_min_bytes is not None:
        lines.append(f"#define ECG_ARENA_MIN_BYTES_HOST {int(arena_min_bytes)}  /* smallest that allocates on the 64-bit host */")
    if arena_targets is not None:
        lines += _arena_target_lines(arena_targets)
    lines += [
        "",
        f'#define ECG_MODEL_SHA256 "{digest}"',
        f"#define ECG_MODEL_BYTES {len(tflite_bytes)}",
        "",
        f"#endif  /* {g} */",
        "",
    ]
    return "\n".join(lines)


def _arena_target_lines(arena_targets: Mapping[str, int]) -> list[str]:
    """ECG_ARENA_BYTES_<TARGET>: the recommended arena of each target (export.json "arena" "targets")."""
    from edge_ecg.export.arena import ESP_NN_VERSION, TARGETS

    if set(arena_targets) != set(TARGETS):
        raise ExportError(f"arena_targets must give {', '.join(TARGETS)}, got {', '.join(sorted(arena_targets)) or 'none'}")
    if not all(int(v) > 0 for v in arena_targets.values()):
        raise ExportError(f"arena sizes must be positive, got {dict(arena_targets)}")
    notes = {
        "reference": "TFLM reference kernels (host, Cortex-M): ECG_ARENA_BYTES",
        "esp32": "esp-tflite-micro ESP-NN kernels, no conv scratch (ESP32, ESP32-C3)",
        "esp32s3": f"ESP-NN kernels on ESP32-S3, with esp-nn {ESP_NN_VERSION}'s conv scratch buffers",
    }
    lines = ["/* Per firmware target (export.json \"arena\" \"targets\"), same rule on each target's minimum. */"]
    for target in TARGETS:
        lines.append(f"#define ECG_ARENA_BYTES_{target.upper()} {int(arena_targets[target])}  /* {notes[target]} */")
    return lines


def _arena_rule_comment() -> str:
    from edge_ecg.export.emulator import ARENA_RULE

    return ARENA_RULE


def c_sources(tflite_bytes: bytes, **config) -> dict[str, str]:
    """The four files' text, by file name; ``config`` as for :func:`model_config_h`."""
    data = bytes(tflite_bytes)
    digest = sha256(data)
    return {
        "model_data.h": model_data_h(digest, len(data)),
        "model_data.cc": model_data_cc(data, digest),
        "model_ops.h": model_ops_h(ops_in_model(data), digest, len(data)),
        "model_config.h": model_config_h(data, digest, **config),
    }


def write_c_sources(folder: str | os.PathLike, tflite_bytes: bytes, **config) -> list[Path]:
    """Write :func:`c_sources` into ``folder`` (created if needed); returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in c_sources(tflite_bytes, **config).items():
        path = folder / name
        tmp = path.with_name(name + ".tmp")
        tmp.write_bytes(text.encode("ascii"))
        os.replace(tmp, path)
        paths.append(path)
    return paths
