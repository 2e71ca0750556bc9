"""The zero-phase input high-pass (`train --highpass HZ`): the filter itself, the standardization that carries
it, and a trained run whose exported model_config.h makes the C preprocessing equal the bench's bytes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import scipy.signal

from edge_ecg.cli import main
from edge_ecg.data import Standardizer
from edge_ecg.preprocess import highpass_coefficients, highpass_filter
from edge_ecg.train import TrainConfig

CORE = Path(__file__).resolve().parents[1] / "firmware" / "core"
RATE = 100


def _sines(*components: tuple[float, float], offset: float = 0.0) -> np.ndarray:
    """(1, 1000, 1) float32 sum of amplitude * sin(2 pi f t) plus an offset, at 100 Hz."""
    t = np.arange(1000) / RATE
    x = offset + sum(a * np.sin(2 * np.pi * f * t) for f, a in components)
    return x.astype(np.float32)[None, :, None]


def test_highpass_keeps_the_ecg_band_and_removes_offset_and_wander_without_a_phase_shift():
    c = highpass_coefficients(0.5, RATE)
    inner = slice(200, 800)  # away from the window's edges
    band = _sines((5.0, 1.0))
    kept = highpass_filter(band + np.float32(2.5), c)  # an offset of 2.5 mV on a 5 Hz wave
    np.testing.assert_allclose(kept[0, inner, 0], band[0, inner, 0], atol=0.01)  # zero phase: no delay, gain 1
    wander = highpass_filter(_sines((0.1, 1.0)), c)
    assert np.abs(wander[0, inner, 0]).max() < 0.06  # 0.1 Hz wander: 1 mV in, a few percent out
    # the same filter as scipy's zero-phase sosfiltfilt away from the edges (which each handles its own way)
    sos = scipy.signal.butter(2, 0.5, btype="highpass", fs=RATE, output="sos")
    mixed = _sines((5.0, 1.0), (0.2, 0.7), offset=-1.0)
    np.testing.assert_allclose(highpass_filter(mixed, c)[0, inner, 0],
                               scipy.signal.sosfiltfilt(sos, mixed[0, :, 0])[inner], atol=0.02)


def test_highpass_filters_each_record_and_lead_alone_and_in_chunks():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (3, 1000, 2)).astype(np.float32) + np.float32(3)
    c = highpass_coefficients(0.5, RATE)
    together = highpass_filter(x, c)
    np.testing.assert_array_equal(together[1, :, 1], highpass_filter(x[1:2, :, 1:2], c)[0, :, 0])
    big = np.repeat(x, 400, axis=0)  # past the chunk size: the same result as one by one
    np.testing.assert_array_equal(highpass_filter(big, c)[::400], together)
    with pytest.raises(ValueError, match="b0, b1, b2, a1, a2"):
        highpass_filter(x, c[:4])
    with pytest.raises(ValueError, match="Nyquist"):
        highpass_coefficients(50.0, RATE)


def test_standardization_with_highpass_fits_the_filtered_records_and_round_trips(tmp_path):
    rng = np.random.default_rng(1)
    x = (rng.normal(0, 0.2, (20, 1000, 3)) + rng.normal(0, 2, (20, 1, 3))).astype(np.float32)  # per-record offsets
    plain = Standardizer.fit(x, ("I", "II", "V2"))
    filtered = Standardizer.fit(x, ("I", "II", "V2"), highpass_hz=0.5, rate_hz=RATE)
    assert plain.highpass is None and filtered.highpass_hz == 0.5
    np.testing.assert_array_equal(filtered.highpass, highpass_coefficients(0.5, RATE))
    assert np.abs(filtered.mean).max() < 0.01 < np.abs(plain.mean).max()  # offsets gone before the mean is taken
    assert (filtered.std < plain.std).all()
    filtered.save(tmp_path / "s.json")
    loaded = Standardizer.load(tmp_path / "s.json")
    np.testing.assert_array_equal(loaded.highpass, filtered.highpass)
    assert (loaded.highpass_hz, loaded.rate_hz) == (0.5, RATE)
    np.testing.assert_array_equal(loaded.transform(x), filtered.transform(x))
    assert not np.array_equal(filtered.transform(x), Standardizer(filtered.mean, filtered.std).transform(x))
    # files written before the option hold no "highpass" and mean none
    plain.save(tmp_path / "p.json")
    assert "highpass" not in json.loads((tmp_path / "p.json").read_text())
    assert Standardizer.load(tmp_path / "p.json").highpass is None


def test_a_cutoff_past_nyquist_is_refused_naming_the_option(tmp_path, capsys):
    from edge_ecg.runfolder import RunError

    with pytest.raises(RunError, match="highpass_hz 60"):
        TrainConfig(highpass_hz=60)
    assert main(["train", "--run", str(tmp_path / "r"), "--highpass", "-1"]) != 0
    assert "highpass" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # nothing written


@pytest.mark.slow
def test_a_highpass_run_exports_a_header_whose_c_preprocessing_equals_the_bench_bytes(ptbxl, tmp_path):
    """Train (tiny) with --highpass 0.5, export, compile model_config.h with ee_preprocess.c: real PTB-XL test
    records give exactly the int8 bytes that bench sends and evaluate scores (edge_ecg.bench._int8_inputs)."""
    from edge_ecg.bench import _int8_inputs
    from edge_ecg.export import export
    from edge_ecg.train import train

    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed: cannot build the firmware preprocessing")
    run = tmp_path / "run"
    config = TrainConfig(arch="dscnn", epochs=1, train_limit=64, leads="2", highpass_hz=0.5,
                         arch_kwargs={"filters": [8, 16, 16], "strides": [4, 4, 4]})
    train(run, config, dataset=ptbxl, progress=False)
    result = export(run, dataset=ptbxl, clip_sigma=3.0, progress=False, n_boot=20, max_drop=1.0)
    header = (run / "export" / "model_config.h").read_text()
    sos = re.search(r"^#define ECG_HIGHPASS_SOS \{(.+?)\}", header, re.M)
    assert sos, "ECG_HIGHPASS_SOS missing from model_config.h"
    coefficients = np.asarray([np.float32(v.strip().rstrip("f")) for v in sos.group(1).split(",")], np.float32)
    np.testing.assert_array_equal(coefficients, Standardizer.load(run / "standardization.json").highpass)

    program = tmp_path / "pre.c"
    program.write_text(r"""
#include <stdio.h>
#include "model_config.h"
#include "ee_preprocess.h"
static const float mean[ECG_INPUT_LEADS] = ECG_LEAD_MEAN;
static const float std_[ECG_INPUT_LEADS] = ECG_LEAD_STD;
static const float highpass[5] = ECG_HIGHPASS_SOS;
static float work[ECG_INPUT_SAMPLES];
static float x[ECG_INPUT_SAMPLES * ECG_INPUT_LEADS];
static int8_t q[ECG_INPUT_SAMPLES * ECG_INPUT_LEADS];
int main(void) {
    ee_preprocess_params_t p = {mean, std_, ECG_INPUT_CLIP_SIGMA, ECG_INPUT_SCALE, ECG_INPUT_ZERO_POINT, highpass, work};
    while (fread(x, sizeof x, 1, stdin) == 1) {
        if (ee_preprocess_mv(x, ECG_INPUT_SAMPLES, ECG_INPUT_LEADS, &p, q) != EE_PREPROCESS_OK) return 3;
        fwrite(q, sizeof q, 1, stdout);
    }
    return 0;
}
""")
    exe = tmp_path / "pre"
    build = subprocess.run(["gcc", "-std=c99", "-O2", "-ffp-contract=off", "-Wall", "-Werror", f"-I{run / 'export'}",
                            f"-I{CORE}", str(program), str(CORE / "ee_preprocess.c"), "-lm", "-o", str(exe)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    from edge_ecg.data.leads import select_leads

    records = select_leads(ptbxl, ["I", "II"]).signals[ptbxl.folds == 10][:20].astype(np.float32)
    out = subprocess.run([str(exe)], input=records.tobytes(), capture_output=True)
    assert out.returncode == 0, out.stderr
    c_bytes = np.frombuffer(out.stdout, np.int8).reshape(records.shape)
    exported = json.loads((run / "export" / "export.json").read_text())
    assert exported["preprocessing"] == {"highpass_hz": 0.5}
    assert "input high-pass: 0.5 Hz" in (run / "export" / "report.md").read_text()
    np.testing.assert_array_equal(c_bytes, _int8_inputs(run, exported, records))
    assert result["tflite"]["input"]["shape"][1:] == [1000, 2]
    assert len(np.unique(c_bytes)) > 20  # real signal, not a constant
