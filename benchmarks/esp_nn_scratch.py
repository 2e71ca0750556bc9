"""esp-nn's own ESP32-S3 scratch-size functions vs edge_ecg.export.arena's Python rules.

    python benchmarks/esp_nn_scratch.py --esp-nn-src DIR [--cases 20000] [--seed 0]

DIR is an esp-nn source tree (``src/convolution/``, ``include/``); its version is read
from ``DIR/idf_component.yml``. The two C functions ``esp_nn_get_conv_scratch_size_esp32s3``
and ``esp_nn_get_depthwise_conv_scratch_size_esp32s3`` are cut out of that tree at run time
(nothing of esp-nn is kept), compiled with gcc against the tree's headers, and called on
random shapes (the dscnn's (k, 1) layers, 1x1 and 3x3 kernels, every padding and stride
combination); each result is compared with :func:`esp32s3_conv_scratch` /
:func:`esp32s3_depthwise_conv_scratch`. Prints the counts and the first mismatches; exits
1 on any mismatch.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from edge_ecg.export.arena import ESP_NN_VERSION, Dims, esp32s3_conv_scratch, esp32s3_depthwise_conv_scratch

FUNCTIONS = {
    "esp_nn_get_conv_scratch_size_esp32s3": "src/convolution/esp_nn_conv_esp32s3.c",
    "esp_nn_get_depthwise_conv_scratch_size_esp32s3": "src/convolution/esp_nn_depthwise_conv_s8_esp32s3.c",
}

HARNESS = r"""
#include <stdio.h>
#include "esp_nn_defs.h"
#include "common_functions.h"
%(functions)s
int main(void) {
    int kind, iw, ih, ic, fw, fh, ow, oh, oc, mult, pw, ph, sw, sh;
    while (scanf("%%d %%d %%d %%d %%d %%d %%d %%d %%d %%d %%d %%d %%d %%d", &kind, &iw, &ih, &ic, &fw, &fh, &ow, &oh,
                 &oc, &mult, &pw, &ph, &sw, &sh) == 14) {
        data_dims_t in = {iw, ih, ic, 1}, out = {ow, oh, oc, 1};
        data_dims_t filt = {fw, fh, kind ? oc : ic, 0};
        if (kind == 0) {
            conv_params_t p = {0, 0, {sw, sh}, {pw, ph}, {0, 0}, {-128, 127}};
            printf("%%d\n", esp_nn_get_conv_scratch_size_esp32s3(&in, &filt, &out, &p));
        } else {
            dw_conv_params_t p = {0, 0, mult, {sw, sh}, {pw, ph}, {0, 0}, {-128, 127}};
            printf("%%d\n", esp_nn_get_depthwise_conv_scratch_size_esp32s3(&in, &filt, &out, &p));
        }
    }
    return 0;
}
"""


def extract(source: str, name: str) -> str:
    """The definition of function ``name`` in ``source``: its signature to the matching brace."""
    match = re.search(rf"^int {name}\s*\(", source, re.M)
    if not match:
        raise SystemExit(f"{name} not found: is this an esp-nn tree?")
    depth, i = 0, source.index("{", match.end())
    for j in range(i, len(source)):
        depth += {"{": 1, "}": -1}.get(source[j], 0)
        if depth == 0:
            return source[match.start() : j + 1]
    raise SystemExit(f"{name}: unbalanced braces")


def random_cases(rng: np.random.Generator, n: int) -> list[tuple[int, ...]]:
    cases = []
    for _ in range(n):
        kind = int(rng.integers(0, 2))  # 0 conv, 1 depthwise
        shape = rng.choice(["k1", "1x1", "3x3", "any"], p=[0.4, 0.2, 0.2, 0.2])
        ic = int(rng.choice([1, 3, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, int(rng.integers(1, 200))]))
        mult = int(rng.choice([1, 1, 1, 2, 4])) if kind else 1
        oc = ic * mult if kind else int(rng.choice([8, 16, 32, 48, 64, 96, 128, int(rng.integers(1, 200))]))
        if shape == "k1":
            iw, ih, fw, fh = 1, int(rng.integers(1, 1200)), 1, int(rng.choice([3, 5, 7, 9, 11, 15]))
        elif shape == "1x1":
            iw, ih, fw, fh = int(rng.integers(1, 40)), int(rng.integers(1, 300)), 1, 1
        elif shape == "3x3":
            iw, ih, fw, fh = int(rng.integers(3, 64)), int(rng.integers(3, 64)), 3, 3
        else:
            iw, ih, fw, fh = (int(v) for v in rng.integers(1, 60, 4))
        fw, fh = min(fw, iw), min(fh, ih)
        sw, sh = (int(v) for v in rng.choice([1, 2, 3], 2))
        same = bool(rng.integers(0, 2))
        ow = -(-iw // sw) if same else (iw - fw) // sw + 1
        oh = -(-ih // sh) if same else (ih - fh) // sh + 1
        pw = max(0, (ow - 1) * sw + fw - iw) // 2
        ph = max(0, (oh - 1) * sh + fh - ih) // 2
        cases.append((kind, iw, ih, ic, fw, fh, ow, oh, oc, mult, pw, ph, sw, sh))
    return cases


def python_rule(case: tuple[int, ...]) -> int:
    kind, iw, ih, ic, fw, fh, ow, oh, oc, mult, pw, ph, sw, sh = case
    if kind == 0:
        return esp32s3_conv_scratch(Dims(iw, ih, ic), Dims(fw, fh, ic), Dims(ow, oh, oc), padding=(pw, ph), stride=(sw, sh))
    return esp32s3_depthwise_conv_scratch(Dims(iw, ih, ic), Dims(fw, fh, oc), Dims(ow, oh, oc), ch_mult=mult,
                                          padding=(pw, ph), stride=(sw, sh))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--esp-nn-src", required=True, type=Path, help="esp-nn source tree")
    parser.add_argument("--cases", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    src = args.esp_nn_src
    if not (src / "include" / "esp_nn_defs.h").is_file():
        parser.error(f"{src} is not an esp-nn source tree (no include/esp_nn_defs.h)")
    if shutil.which("gcc") is None:
        parser.error("gcc is not installed")
    manifest = src / "idf_component.yml"
    version = re.search(r'^version:\s*"?([^"\s]+)', manifest.read_text(), re.M).group(1) if manifest.is_file() else "?"
    functions = "\n".join(extract((src / path).read_text(), name) for name, path in FUNCTIONS.items())
    cases = random_cases(np.random.default_rng(args.seed), args.cases)
    with tempfile.TemporaryDirectory(prefix="esp-nn-scratch-") as tmp:
        c_file, binary = Path(tmp) / "harness.c", Path(tmp) / "harness"
        c_file.write_text(HARNESS % {"functions": functions})
        subprocess.run(["gcc", "-std=gnu11", "-O1", f"-I{src / 'include'}", f"-I{src / 'src' / 'common'}",
                        str(c_file), "-o", str(binary)], check=True)  # fmt: skip
        stdin = "\n".join(" ".join(map(str, c)) for c in cases) + "\n"
        out = subprocess.run([str(binary)], input=stdin, capture_output=True, text=True, check=True).stdout.split()
    c_sizes = [int(v) for v in out]
    mismatches = [(c, got, python_rule(c)) for c, got in zip(cases, c_sizes) if python_rule(c) != got]
    conv = sum(c[0] == 0 for c in cases)
    print(f"esp-nn tree {src} (version {version}); Python rules transcribed from esp-nn {ESP_NN_VERSION}")
    print(f"{len(cases)} random shapes ({conv} conv, {len(cases) - conv} depthwise): "
          f"{len(cases) - len(mismatches)} equal, {len(mismatches)} differ")  # fmt: skip
    print("fields: kind(0 conv,1 dw) in_w in_h in_ch f_w f_h out_w out_h out_ch mult pad_w pad_h stride_w stride_h")
    for case, got, want in mismatches[:10]:
        print(f"  {case}: C {got}, Python {want}")
    return 1 if mismatches or len(c_sizes) != len(cases) else 0


if __name__ == "__main__":
    sys.exit(main())
