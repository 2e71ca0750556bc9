"""Export stage: int8 TFLite, TFLite Micro host emulation, arena, generated C sources.

A tiny dscnn is trained once for the module (one epoch on 64 records) and exported
once; the tests check the files and properties of that export.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from edge_ecg.export import (
    ExportError,
    TFLM_RESOLVER,
    check_tflite,
    dequantize_output,
    export,
    litert_run,
    load_model,
    model_io,
    ops_in_model,
    quantize_input,
    tflm_run,
    to_int8_tflite,
)
from edge_ecg.export.csources import SOURCE_FILES, c_float
from edge_ecg.export.emulator import recommended_arena, tflm_interpreter
from edge_ecg.train import RunError, TrainConfig, open_run, train

TINY = TrainConfig(arch="dscnn", epochs=1, train_limit=64, arch_kwargs={"filters": [8, 16, 16], "strides": [4, 4, 4]})
N_BOOT = 50  # bootstrap replicates: enough to exercise the interval, fast
# export.json rounds its display floats to 6 significant digits (runfolder.display_floats): a difference
# recomputed from two rounded AUCs may differ from the rounded difference by up to one unit in the 6th digit.
DISPLAY_TOLERANCE = 2e-6


@pytest.fixture(scope="module")
def trained_run(ptbxl, tmp_path_factory):
    run = tmp_path_factory.mktemp("export") / "run"
    train(run, TINY, dataset=ptbxl, progress=False)
    return run


@pytest.fixture(scope="module")
def exported(trained_run, ptbxl):
    result = export(trained_run, dataset=ptbxl, progress=False, n_boot=N_BOOT)
    out = trained_run / "export"
    files = {name: (out / name).read_bytes() for name in (*SOURCE_FILES, "model_int8.tflite")}
    return trained_run, result, files


def _standardized(run, records):
    from edge_ecg.data import Standardizer

    return Standardizer.load(run / "standardization.json").transform(records.signals)


def test_export_writes_an_int8_model_with_static_shapes_and_its_report(exported, ptbxl):
    run, result, files = exported
    out = run / "export"
    for name in ("model_int8.tflite", *SOURCE_FILES, "export.json", "test_int8_outputs.npy", "test_ecg_ids.npy"):
        assert (out / name).is_file(), name
    tflite = files["model_int8.tflite"]
    io = model_io(tflite)
    (inp,), (outp,) = io["inputs"], io["outputs"]
    assert inp["dtype"] == outp["dtype"] == "INT8"
    assert inp["shape"] == inp["shape_signature"] == [1, 1000, 12]
    assert outp["shape"] == outp["shape_signature"] == [1, 5]
    ops = ops_in_model(tflite)
    assert not {"SHAPE", "STRIDED_SLICE", "PACK"} & set(ops)
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"} <= set(ops)
    # the sigmoid is cut off: the firmware outputs int8 logits, the host applies the sigmoid
    assert "LOGISTIC" not in ops and result["tflite"]["output_kind"] == "logit"
    assert "#define ECG_OUTPUT_IS_LOGIT 1" in (out / "model_config.h").read_text()

    saved = json.loads((out / "export.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["tflite"]["bytes"] == len(tflite) and saved["tflite"]["ops"] == ops
    parity = saved["parity"]
    assert parity["test_records"] == 126 == saved["test"]["records"]
    # LiteRT's reference kernels are a cross-check of TFLite Micro: identical, or at most 1 LSB apart and listed
    mismatches = parity["tflm_litert_mismatches"]
    assert parity["tflm_litert_identical_records"] + len(mismatches) == 126
    assert all(m["max_lsb"] <= parity["tflm_litert_tolerance_lsb"] == 1 for m in mismatches)
    assert parity["auc_drop"] == pytest.approx(parity["float_test_macro_auc"] - parity["int8_tflm_test_macro_auc"], abs=DISPLAY_TOLERANCE)
    lo, hi = saved["test"]["macro_auc_ci95"]
    assert lo <= saved["test"]["macro_auc"] <= hi
    assert set(saved["test"]["per_class_auc"]) == {"NORM", "MI", "STTC", "CD", "HYP"}
    assert saved["quantization_aware"] is False and saved["model"] == "model.keras"

    outputs, ids = np.load(out / "test_int8_outputs.npy"), np.load(out / "test_ecg_ids.npy")
    assert outputs.shape == (126, 5) and outputs.dtype == np.int8
    from edge_ecg.data import split_folds

    test = split_folds(ptbxl).test
    np.testing.assert_array_equal(ids, test.ecg_ids)
    # the saved outputs are the TFLM outputs of those records
    x = quantize_input(_standardized(run, test.select(np.arange(8))), inp["scale"], inp["zero_point"])
    np.testing.assert_array_equal(tflm_run(tflite, x), outputs[:8])


def test_exporting_twice_gives_byte_identical_sources(exported, ptbxl):
    run, _, first = exported
    export(run, dataset=ptbxl, progress=False, n_boot=N_BOOT, clip_sigma=None)
    for name, content in first.items():
        assert (run / "export" / name).read_bytes() == content, name
    for name in SOURCE_FILES:
        text = first[name].decode()
        assert "edge-ecg " in text and "generated, do not edit" in text
        assert re.search(r"SHA-256: [0-9a-f]{64}", text)
        assert not re.search(r"20\d\d-\d\d-\d\d", text)  # no dates


def test_model_ops_h_registers_exactly_the_models_ops(exported):
    _, result, files = exported
    text = files["model_ops.h"].decode()
    ops = ops_in_model(files["model_int8.tflite"])
    calls = re.findall(r"resolver\.(Add\w+)\(\)", text)
    assert sorted(calls) == sorted(TFLM_RESOLVER[op] for op in ops)
    assert len(calls) == len(set(calls))
    counts = set(re.findall(r"MicroMutableOpResolver<(\d+)>", text))
    assert counts == {str(len(ops))}
    assert f"constexpr int kEcgOpCount = {len(ops)};" in text
    assert text.count("#ifndef EDGE_ECG_MODEL_OPS_H_") == 1 and "#endif" in text


def test_generated_sources_compile_and_hold_the_exported_values(exported, tmp_path):
    if not (shutil.which("gcc") and shutil.which("g++")):
        pytest.skip("gcc/g++ not installed")
    run, result, files = exported
    src = run / "export"
    main_cc = tmp_path / "main.cc"
    main_cc.write_text(
        '#include "model_config.h"\n#include "model_data.h"\n#include "model_config.h"\n#include "model_data.h"\n'
        "static const float kMean[ECG_INPUT_LEADS] = ECG_LEAD_MEAN;\n"
        "static const char* const kNames[ECG_NUM_CLASSES] = ECG_CLASS_NAMES;\n"
        "int first(void) { return g_ecg_model_data[0] + (int)g_ecg_model_data_len + (int)kMean[0] + kNames[0][0]; }\n"
    )
    cc = ["g++", "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", f"-I{src}", str(main_cc)]
    r = subprocess.run(cc, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["g++", "-std=c++17", "-c", "-Wall", "-Wextra", "-Werror", f"-I{src}", str(src / "model_data.cc"),
                        "-o", str(tmp_path / "model_data.o")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr

    # C99: the config header alone, and a program printing what it defines
    main_c = tmp_path / "main.c"
    main_c.write_text(
        '#include <stdio.h>\n#include "model_config.h"\n#include "model_data.h"\n'
        "int main(void) {\n"
        "  const float thr[ECG_NUM_CLASSES] = ECG_THRESHOLDS; const int thq[ECG_NUM_CLASSES] = ECG_THRESHOLDS_Q;\n"
        "  const float mean[ECG_INPUT_LEADS] = ECG_LEAD_MEAN; const float sd[ECG_INPUT_LEADS] = ECG_LEAD_STD;\n"
        "  const char* names[ECG_NUM_CLASSES] = ECG_CLASS_NAMES; int i;\n"
        '  printf("%d %d %d %.9g %d %.9g %d %d %d %s %.9g\\n", ECG_INPUT_SAMPLES, ECG_INPUT_LEADS, EE_INPUT_BYTES,\n'
        "         (double)ECG_INPUT_SCALE, ECG_INPUT_ZERO_POINT, (double)ECG_OUTPUT_SCALE, ECG_OUTPUT_ZERO_POINT,\n"
        "         ECG_ARENA_BYTES, ECG_MODEL_BYTES, ECG_MODEL_SHA256, (double)ECG_INPUT_CLIP_SIGMA);\n"
        '  for (i = 0; i < ECG_NUM_CLASSES; i++) printf("%s %.9g %d\\n", names[i], (double)thr[i], thq[i]);\n'
        '  for (i = 0; i < ECG_INPUT_LEADS; i++) printf("%.9g %.9g\\n", (double)mean[i], (double)sd[i]);\n'
        "  return 0;\n}\n"
    )
    syntax = ["gcc", "-std=c99", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-x", "c", f"-I{src}"]
    r = subprocess.run([*syntax, str(src / "model_config.h")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    exe = tmp_path / "config_dump"
    strict = ["-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror"]
    r = subprocess.run(["gcc", *strict, f"-I{src}", str(main_c), "-o", str(exe)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.splitlines()

    head = lines[0].split()
    io, arena = result["tflite"], result["arena"]
    assert [int(v) for v in head[:3]] == [1000, 12, 12000]
    assert np.float32(head[3]) == np.float32(io["input"]["scale"]) and int(head[4]) == io["input"]["zero_point"]
    assert np.float32(head[5]) == np.float32(io["output"]["scale"]) and int(head[6]) == io["output"]["zero_point"]
    assert int(head[7]) == arena["recommended_bytes"] and int(head[8]) == io["bytes"]
    assert head[9] == io["sha256"] and float(head[10]) == 0.0
    scale, zp = io["output"]["scale"], io["output"]["zero_point"]
    for line, (name, t) in zip(lines[1:6], result["thresholds"]["values"].items()):
        c_name, c_t, c_q = line.split()
        assert c_name == name and np.float32(c_t) == np.float32(t)
        q = np.arange(-128, 128)
        p = 1 / (1 + np.exp(-dequantize_output(q, scale, zp).astype(np.float64)))  # the outputs are logits
        p = p.astype(np.float32)
        assert int(c_q) == (int(q[p >= np.float32(t)][0]) if (p >= np.float32(t)).any() else 128)
    std = json.loads((run / "standardization.json").read_text())
    for line, m, s in zip(lines[6:], std["mean"], std["std"]):
        assert [np.float32(v) for v in line.split()] == [np.float32(m), np.float32(s)]  # exact float32 round trip


def test_c_float_round_trips_float32_exactly():
    for v in (0.0, 1.0, -2.0, 1e-5, 0.1, 3.4028235e38, 1.1754944e-38, 0.0365723521, -0.00028778132):
        text = c_float(v)
        assert text.endswith("f") and ("." in text or "e" in text)
        assert np.float32(text[:-1]) == np.float32(v)
    with pytest.raises(ExportError):
        c_float(float("nan"))


def test_arena_minimum_allocates_and_one_byte_less_does_not(exported):
    _, result, files = exported
    arena = result["arena"]
    tflite = files["model_int8.tflite"]
    n = arena["min_bytes"]
    assert arena["head_bytes"] + arena["tail_bytes"] == arena["recorded_total_bytes"] <= n
    tflm_interpreter(tflite, n)
    with pytest.raises(ExportError, match="cannot allocate"):
        tflm_interpreter(tflite, n - 1)
    assert arena["min_minus_one_fails"] is True
    assert arena["recommended_bytes"] == recommended_arena(n) and arena["recommended_bytes"] % 16 == 0
    assert n + 1024 <= arena["recommended_bytes"] < n + 1024 + 16
    assert f"#define ECG_ARENA_BYTES {arena['recommended_bytes']}\n" in files["model_config.h"].decode()
    config = files["model_config.h"].decode()
    for line in ("#define EE_INPUT_SAMPLES 1000", "#define EE_INPUT_LEADS 12", "#define EE_OUTPUT_COUNT 5"):
        assert line in config


def test_tflm_and_litert_reference_agree_within_one_lsb_on_real_records(exported, ptbxl):
    run, _, files = exported
    from edge_ecg.data import split_folds

    tflite = files["model_int8.tflite"]
    inp = model_io(tflite)["inputs"][0]
    val = split_folds(ptbxl).val
    x = quantize_input(_standardized(run, val.select(np.arange(24))), inp["scale"], inp["zero_point"])
    a, b = tflm_run(tflite, x), litert_run(tflite, x)
    assert a.shape == (24, 5) and a.dtype == np.int8
    # measured: the int8 logits of TFLM and LiteRT's BUILTIN_REF are equal or 1 LSB apart
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert np.mean(np.all(a == b, axis=1)) >= 0.75


def test_quantize_and_dequantize_use_the_tensor_parameters():
    q = quantize_input(np.array([0.0, 0.1, -0.1, 0.25, 100.0, -100.0, 0.05]), 0.1, -2)
    np.testing.assert_array_equal(q, np.array([-2, -1, -3, 0, 127, -128, -2], np.int8))  # 0.5 rounds to even
    np.testing.assert_allclose(dequantize_output(np.array([-128, 0, 127], np.int8), 1 / 256, -128), [0.0, 0.5, 255 / 256])


def test_nan_in_representative_data_is_refused(exported):
    run, _, _ = exported
    model = load_model(run / "model.keras")
    rep = np.zeros((8, 1000, 12), np.float32)
    rep[2, 10, 3] = np.nan
    rep[5, 0, 0] = np.inf
    with pytest.raises(ExportError, match=r"2 of 8 records contain NaN or inf"):
        to_int8_tflite(model, rep)


def _tiny(activation_layer):
    """(4, 3) records -> Dense -> activation -> mean over time -> 5 sigmoids."""
    from edge_ecg.tf import keras

    inputs = keras.Input((4, 3))
    x = activation_layer(keras.layers.Dense(8)(inputs))
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, keras.layers.Dense(5, activation="sigmoid")(x))


TINY_REP = np.random.default_rng(0).normal(size=(8, 4, 3)).astype(np.float32)


def test_an_op_the_resolver_table_lacks_is_refused():
    from edge_ecg.tf import keras

    model = _tiny(keras.layers.Activation("gelu"))  # int8 GELU exists in TFLite, not in TFLite Micro
    with pytest.raises(ExportError, match=r"GELU, which the firmware's TFLite Micro resolver .* cannot register"):
        to_int8_tflite(model, TINY_REP)
    assert "GELU" not in TFLM_RESOLVER


def test_float_io_and_dynamic_batch_are_refused():
    from edge_ecg.tf import keras, tf

    model = _tiny(keras.layers.ReLU())
    assert model_io(to_int8_tflite(model, TINY_REP))["inputs"][0]["shape"] == [1, 4, 3]
    float_model = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    with pytest.raises(ExportError, match=r"input .* is FLOAT32, the firmware needs INT8"):
        check_tflite(float_model)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)  # batch dimension left dynamic
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([r[None]] for r in TINY_REP)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    dynamic = converter.convert()
    assert model_io(dynamic)["inputs"][0]["shape_signature"][0] == -1
    with pytest.raises(ExportError, match="batch 1"):
        check_tflite(dynamic)


def test_a_run_folder_without_a_model_says_to_train_first(tmp_path, ptbxl):
    with pytest.raises(RunError, match="edge-ecg train"):
        export(tmp_path / "nothing", dataset=ptbxl, progress=False)
    run = tmp_path / "untrained"
    open_run(run, TINY)
    with pytest.raises(RunError, match=r"no trained model.*edge-ecg train --run"):
        export(run, dataset=ptbxl, progress=False)


def _qat_model(run):
    import tensorflow_model_optimization as tfmot

    return tfmot.quantization.keras.quantize_model(load_model(run / "model.keras"))


def _assert_same_weights(a, b):
    assert len(a.weights) == len(b.weights)
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(wa.numpy(), wb.numpy())


def test_load_model_reads_a_quantization_aware_model_saved_as_keras(exported, tmp_path):
    run, _, _ = exported
    qat = _qat_model(run)
    for w in qat.weights:  # make the values distinguishable from a fresh model's
        if w.name.endswith(("kernel:0", "gamma:0", "beta:0", "bias:0")):
            w.assign(w * 1.5 + 0.01)
    qat.save(tmp_path / "qat.keras")
    _assert_same_weights(qat, load_model(tmp_path / "qat.keras"))


def test_a_quantization_aware_model_from_compress_is_exported(exported, ptbxl, tmp_path):
    run, _, _ = exported
    qat_run = tmp_path / "qat"
    (qat_run / "compress").mkdir(parents=True)
    for name in ("config.json", "standardization.json"):
        shutil.copy(run / name, qat_run / name)
    qat = _qat_model(run)
    qat.save(qat_run / "compress" / "final.h5")  # what `edge-ecg compress` leaves
    _assert_same_weights(qat, load_model(qat_run / "compress" / "final.h5"))

    result = export(qat_run, dataset=ptbxl, progress=False, n_boot=N_BOOT, clip_sigma=None)
    assert result["model"] == "compress/final.h5" and result["quantization_aware"] is True
    assert result["tflite"]["input"]["dtype"] == result["tflite"]["output"]["dtype"] == "INT8"
    assert not {"SHAPE", "STRIDED_SLICE", "PACK"} & set(result["tflite"]["ops"])
    parity = result["parity"]
    assert parity["tflm_litert_identical_records"] + len(parity["tflm_litert_mismatches"]) == parity["test_records"] == 126


# --------------------------------------------------------------------------- robust input calibration


def test_auto_clipping_is_chosen_on_validation_and_reported_with_and_without(exported):
    _, result, _ = exported
    calibration = result["calibration"]
    assert "validation fold" in calibration["chosen_by"]
    clips = [t["clip_sigma"] for t in calibration["trials"]]
    assert clips == [3.0, 4.0, 5.0, 6.0, 8.0, None]
    clipped = [t for t in calibration["trials"] if t["clip_sigma"] is not None]
    best = max(clipped, key=lambda t: t["val_gain_over_no_clip"]["difference"])
    expected = best["clip_sigma"] if best["val_gain_over_no_clip"]["ci95"][0] > 0 else None
    assert calibration["clip_sigma"] == expected
    for t in calibration["trials"]:
        assert {"test_int8_macro_auc", "test_mean_abs_diff", "val_int8_macro_auc"} <= set(t)
    for t in clipped:
        unclipped_auc = calibration["trials"][-1]["val_int8_macro_auc"]
        assert t["val_gain_over_no_clip"]["difference"] == pytest.approx(t["val_int8_macro_auc"] - unclipped_auc, abs=DISPLAY_TOLERANCE)


def test_auto_clipping_needs_a_gain_that_holds_under_the_bootstrap():
    from edge_ecg.export import choose_clip

    rng = np.random.default_rng(0)
    labels = (rng.random((200, 5)) < 0.3).astype(np.int64)
    noisy = np.clip(labels * 0.3 + rng.random((200, 5)) * 0.7, 0, 1)  # AUC about 0.8
    # A level that separates the classes far better is taken; the best of several noise-level variants is not.
    better = np.clip(labels * 0.8 + rng.random((200, 5)) * 0.2, 0, 1)
    chosen, gains = choose_clip(labels, {3.0: noisy, 6.0: better, None: noisy}, n_boot=200)
    assert chosen == 6.0 and gains[6.0]["ci95"][0] > 0 and gains[3.0]["difference"] == 0
    jitter = {c: np.clip(noisy + rng.normal(0, 0.01, noisy.shape), 0, 1) for c in (3.0, 4.0, 5.0, 6.0, 8.0)}
    chosen, gains = choose_clip(labels, {**jitter, None: noisy}, n_boot=200)
    assert chosen is None and max(g["difference"] for g in gains.values()) != 0


def test_clipping_sets_the_input_range_as_specified(trained_run, ptbxl, tmp_path):
    result = export(trained_run, dataset=ptbxl, progress=False, n_boot=N_BOOT, clip_sigma=3.0, out=tmp_path / "c3",
                    max_drop=1.0)  # a tiny model clipped hard: the loss is not what this tests
    scale = result["tflite"]["input"]["scale"]
    zero_point = result["tflite"]["input"]["zero_point"]
    # the calibrated range is the clipped one: [-3, 3] sd in 255 steps
    assert scale == pytest.approx(6.0 / 255, rel=0.02)
    assert abs(zero_point) <= 1
    unclipped = next(t for t in result["calibration"]["trials"] if t["clip_sigma"] is None)
    assert unclipped["input_scale"] > 1.5 * scale  # the large-amplitude records stretch the step without it
    assert "#define ECG_INPUT_CLIP_SIGMA 3.0f" in (tmp_path / "c3" / "model_config.h").read_text()


def test_c_preprocessing_matches_python_on_real_records_with_clipping(trained_run, ptbxl, tmp_path):
    """firmware/core's ee_preprocess_mv with the exported model_config.h == the Python pipeline."""
    from pathlib import Path

    from edge_ecg.data import Standardizer
    from edge_ecg.preprocess import int8_input

    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    out = tmp_path / "c3"
    result = export(trained_run, dataset=ptbxl, progress=False, n_boot=N_BOOT, clip_sigma=3.0, out=out, max_drop=1.0)
    core = Path(__file__).resolve().parents[1] / "firmware" / "core"
    program = tmp_path / "pre.c"
    program.write_text(
        '#include <stdio.h>\n#include "model_config.h"\n#include "ee_preprocess.h"\n'
        "static float x[ECG_INPUT_SAMPLES * ECG_INPUT_LEADS]; static int8_t q[ECG_INPUT_SAMPLES * ECG_INPUT_LEADS];\n"
        "static const float mean[] = ECG_LEAD_MEAN; static const float sd[] = ECG_LEAD_STD;\n"
        "int main(void) {\n"
        "  ee_preprocess_params_t p = {mean, sd, ECG_INPUT_CLIP_SIGMA, ECG_INPUT_SCALE, ECG_INPUT_ZERO_POINT};\n"
        "  while (fread(x, sizeof x, 1, stdin) == 1) {\n"
        "    if (ee_preprocess_mv(x, ECG_INPUT_SAMPLES, ECG_INPUT_LEADS, &p, q) != EE_PREPROCESS_OK) return 2;\n"
        "    fwrite(q, sizeof q, 1, stdout);\n  }\n  return 0;\n}\n"
    )
    exe = tmp_path / "pre"
    subprocess.run(["gcc", "-std=c99", "-O2", "-Wall", "-Werror", f"-I{out}", f"-I{core}", str(program),
                    str(core / "ee_preprocess.c"), "-lm", "-o", str(exe)], check=True, capture_output=True)
    # the test fold plus the two large-amplitude records that clipping is for
    pick = np.flatnonzero((ptbxl.folds == 10) | np.isin(ptbxl.ecg_ids, [421, 710]))[:40]
    raw = ptbxl.signals[pick].astype(np.float32)
    c_out = np.frombuffer(subprocess.run([str(exe)], input=raw.tobytes(), capture_output=True, check=True).stdout, np.int8)
    standardizer = Standardizer.load(trained_run / "standardization.json")
    q = int8_input(raw, standardizer.mean, standardizer.std, 3.0, result["tflite"]["input"]["scale"],
                   result["tflite"]["input"]["zero_point"])  # the Python twin that export and bench use
    np.testing.assert_array_equal(c_out.reshape(q.shape), q)
    assert (np.abs(_standardized(trained_run, ptbxl.select(pick))) > 3.0).any()  # clipping really happened


def test_export_cuts_the_sigmoid_so_the_int8_model_outputs_logits():
    from edge_ecg.export.convert import deployable_model, output_probabilities
    from edge_ecg.models import dscnn
    from edge_ecg.tf import keras

    model = dscnn(filters=(4, 8), strides=(4, 4))
    logits, kind = deployable_model(model)
    assert kind == "logit" and logits.layers[-1].name == "classifier"
    x = np.random.default_rng(0).normal(size=(2, 1000, 12)).astype(np.float32)
    np.testing.assert_allclose(1 / (1 + np.exp(-logits(x).numpy())), model(x).numpy(), rtol=1e-5)
    inputs = keras.Input((1000, 12))
    built_in = keras.Model(inputs, keras.layers.Dense(5, activation="sigmoid")(keras.layers.GlobalAveragePooling1D()(inputs)))
    assert deployable_model(built_in) == (built_in, "probability")
    q = np.array([[-128, 0, 127]], np.int8)
    np.testing.assert_allclose(output_probabilities(q, 0.1, 0, "logit"), 1 / (1 + np.exp(-np.array([[-12.8, 0.0, 12.7]]))), rtol=1e-6)
    np.testing.assert_allclose(output_probabilities(q, 1 / 256, -128, "probability"), [[0.0, 0.5, 255 / 256]])


def test_weight_zero_fraction_counts_the_zeros_stored_in_the_file():
    from edge_ecg.export.convert import weight_zero_fraction
    from edge_ecg.tf import keras

    inputs = keras.Input((100, 12))
    dense = keras.layers.Dense(16)
    model = keras.Model(inputs, dense(keras.layers.GlobalAveragePooling1D()(inputs)))
    kernel, bias = dense.get_weights()
    kernel = np.where(np.arange(kernel.size).reshape(kernel.shape) % 4 == 0, 0.0, 1.0 + kernel).astype(np.float32)
    dense.set_weights([kernel, bias])
    tflite = to_int8_tflite(model, np.random.default_rng(1).normal(size=(8, 100, 12)).astype(np.float32))
    assert weight_zero_fraction(tflite) == pytest.approx(0.25)


# --------------------------------------------------------------------------- float vs int8 parity on validation


@pytest.mark.slow
def test_an_int8_model_losing_more_than_max_drop_is_refused_and_the_previous_export_stays(exported, ptbxl_dir, capsys):
    from edge_ecg.cli import main

    run, result, _ = exported
    parity, calibration = result["parity"], result["calibration"]
    chosen = next(t for t in calibration["trials"] if t["clip_sigma"] == calibration["clip_sigma"])
    assert parity["max_drop"] == 0.01 and parity["val_int8_macro_auc"] == chosen["val_int8_macro_auc"]
    assert parity["val_auc_drop"] == pytest.approx(parity["val_float_macro_auc"] - parity["val_int8_macro_auc"], abs=DISPLAY_TOLERANCE)
    assert parity["val_auc_drop"] <= parity["max_drop"]

    out = run / "export"
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    # max_drop -1: int8 would have to beat float by a whole AUC point, so any real model fails
    assert main(["export", "--run", str(run), "--data", str(ptbxl_dir), "--clip", "off", "--max-drop", "-1"]) == 1
    err = capsys.readouterr().err
    no_clip = next(t for t in calibration["trials"] if t["clip_sigma"] is None)
    assert f"validation macro AUC {no_clip['val_int8_macro_auc']:.4f}" in err
    assert f"the float model's {parity['val_float_macro_auc']:.4f}" in err
    assert "more than max_drop -1" in err and "--max-drop" in err and "nothing was written" in err
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()} == before


def test_max_drop_must_be_a_finite_number(tmp_path):
    for bad in (float("nan"), float("inf"), "0.01", True):
        with pytest.raises(ExportError, match="max_drop must be a finite number"):
            export(tmp_path, max_drop=bad, progress=False)
