"""Reduced-lead models: --leads presets, lead selection by name, the run's lead set, and a 1-lead model
from training through export to the firmware's C preprocessing on real records."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from test_cinc import CINC, write_record  # the hand-written CinC record helper (tests/ is on sys.path)

from edge_ecg.cli import main
from edge_ecg.data import LEADS, load_dataset
from edge_ecg.data.leads import LEAD_PRESETS, LeadError, parse_leads, select_leads
from edge_ecg.runfolder import RunFolder
from edge_ecg.train import TrainConfig, load_split, open_run

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "firmware" / "core"


# --------------------------------------------------------------------------- presets and names


@pytest.mark.parametrize("spec, expected", [
    ("12", LEADS),
    ("6", ("I", "II", "III", "AVR", "AVL", "AVF")),
    ("3", ("I", "II", "V2")),
    ("2", ("I", "II")),
    ("1", ("I",)),
    ("I", ("I",)),
    ("II", ("II",)),
    ("aVR, v5", ("AVR", "V5")),
    (["ii", "V1"], ("II", "V1")),
    (None, LEADS),
])
def test_presets_and_lists(spec, expected):
    assert parse_leads(spec) == expected


@pytest.mark.parametrize("spec, text", [("V7", "unknown lead 'V7'"), ("I,I", "appears twice"), ("", "give a preset"),
                                        ("I,,II", "give a preset"), ("avf1", "did you mean 'aVF'")])
def test_bad_lead_sets_name_the_argument(spec, text):
    with pytest.raises(LeadError, match="--leads") as err:
        parse_leads(spec)
    assert text in str(err.value)


def test_unknown_lead_on_the_command_line_writes_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--leads", "I,V9", "--run", str(run), "--epochs", "1"]) == 1
    err = capsys.readouterr().err
    assert "--leads" in err and "'V9'" in err
    assert main(["run", "--run", str(run), "--leads", "aVX"]) == 1  # the pipeline refuses it before its first stage
    assert "--leads 'aVX': unknown lead" in capsys.readouterr().err
    assert not run.exists()


# --------------------------------------------------------------------------- selection


def test_ptbxl_leads_are_selected_by_name(ptbxl):
    three = select_leads(ptbxl, LEAD_PRESETS["3"])
    assert three.leads == ("I", "II", "V2") and three.signals.shape[-1] == 3
    np.testing.assert_array_equal(three.signals, ptbxl.signals[..., [0, 1, 7]])
    # a set in another order follows the names, not the positions
    np.testing.assert_array_equal(select_leads(ptbxl, ["V2", "I"]).signals, ptbxl.signals[..., [7, 0]])
    split = load_split(TrainConfig(leads="II"), ptbxl)
    np.testing.assert_array_equal(split.test.signals[..., 0], ptbxl.signals[ptbxl.folds == 10][..., 1])


def test_a_dataset_without_a_needed_lead_is_refused_naming_it(ptbxl):
    limb = select_leads(ptbxl, LEAD_PRESETS["6"])
    with pytest.raises(LeadError, match=r"V2 is missing"):
        select_leads(limb, LEAD_PRESETS["3"])


@pytest.fixture
def mixed_cinc(tmp_path) -> Path:
    """A CinC folder with one real 12-lead record and the same record cut to its six limb leads."""
    real = CINC / "georgia" / "E00001.mat"
    if not real.is_file():
        pytest.skip(f"CinC sample not found at {CINC}")
    val = scipy.io.loadmat(real)["val"]
    folder = tmp_path / "cinc"
    write_record(folder / "site", "A00001", val)
    write_record(folder / "site", "A00002", val[:6], leads=("I", "II", "III", "aVR", "aVL", "aVF"))
    return folder


def test_a_record_with_fewer_leads_than_the_model_needs_is_skipped_naming_its_file(mixed_cinc):
    ds = load_dataset(mixed_cinc, 100, leads="3")
    assert ds.leads == ("I", "II", "V2") and ds.signals.shape[-1] == 3
    assert set(ds.ecg_ids.tolist()) == {1}
    (issue,) = ds.skipped
    assert "A00002.hea" in issue.reason and "V2 is missing" in issue.reason
    # the limb leads alone are in both records, in the same mV
    limb = load_dataset(mixed_cinc, 100, leads="6")
    assert not limb.skipped and set(limb.ecg_ids.tolist()) == {1, 2}
    np.testing.assert_array_equal(limb.signals[limb.ecg_ids == 1], limb.signals[limb.ecg_ids == 2])
    full = load_dataset(mixed_cinc, 100, leads="3")
    np.testing.assert_array_equal(full.signals[..., 2], load_dataset(mixed_cinc, 100, leads="V2").signals[..., 0])


# --------------------------------------------------------------------------- the run's lead set


def test_later_stages_refuse_a_conflicting_leads(tmp_path, capsys):
    run = tmp_path / "run"
    open_run(run, TrainConfig(leads="3"))
    assert json.loads((run / "config.json").read_text())["train"]["leads"] == ["I", "II", "V2"]
    assert RunFolder(run).leads() == ("I", "II", "V2")
    for stage in ("export", "compress", "build", "evaluate"):
        assert main([stage, "--run", str(run), "--leads", "12"]) == 1
        err = capsys.readouterr().err
        assert "--leads 12" in err and "trained on leads I,II,V2" in err, (stage, err)
    # the same set, spelled differently, passes the check (and fails later: there is no model)
    assert main(["export", "--run", str(run), "--leads", "i,ii,v2"]) == 1
    assert "trained on leads" not in capsys.readouterr().err


def test_runs_written_before_leads_existed_have_twelve(tmp_path):
    run = tmp_path / "old"
    open_run(run, TrainConfig())
    cfg = json.loads((run / "config.json").read_text())
    del cfg["train"]["leads"]
    (run / "config.json").write_text(json.dumps(cfg))
    assert RunFolder(run).leads() == LEADS
    assert TrainConfig.from_dict(cfg["train"]).leads == list(LEADS)


# --------------------------------------------------------------------------- 1-lead model end to end

TINY_1 = TrainConfig(arch="dscnn", epochs=1, train_limit=64, leads="I",
                     arch_kwargs={"filters": [8, 16, 16], "strides": [4, 4, 4]})


@pytest.fixture(scope="module")
def exported_run(ptbxl, tmp_path_factory):
    from edge_ecg.export import export
    from edge_ecg.train import train

    run = tmp_path_factory.mktemp("leads") / "run"
    train(run, TINY_1, dataset=ptbxl, progress=False)
    result = export(run, dataset=ptbxl, clip_sigma=3.0, progress=False, n_boot=20, max_drop=1.0)
    return run, result


def _define(header: str, name: str) -> str:
    m = re.search(rf"^#define {name} (.+?)(?:\s*/\*.*)?$", header, re.M)
    assert m, f"{name} missing from model_config.h"
    return m.group(1).strip()


def test_one_lead_model_trains_and_exports(exported_run):
    from edge_ecg.data import Standardizer
    from edge_ecg.export import load_model

    run, result = exported_run
    assert load_model(run / "model.keras").input_shape[1:] == (1000, 1)
    assert result["tflite"]["input"]["shape"][1:] == [1000, 1]
    assert Standardizer.load(run / "standardization.json").leads == ("I",)
    header = (run / "export" / "model_config.h").read_text()
    assert _define(header, "EE_INPUT_LEADS") == "1" and _define(header, "ECG_INPUT_LEADS") == "1"
    assert _define(header, "EE_INPUT_BYTES").startswith("1000")
    assert _define(header, "ECG_LEAD_NAMES").replace(" ", "") == '{"I"}'


def test_c_preprocessing_of_a_one_lead_model_matches_python_on_real_records(exported_run, ptbxl, tmp_path):
    """The generated model_config.h compiled with ee_preprocess.c: channel count and standardization from
    the header, real PTB-XL test records' lead I in, the same int8 bytes as edge_ecg.preprocess."""
    from edge_ecg.data import Standardizer
    from edge_ecg.preprocess import int8_input

    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed: cannot build the firmware preprocessing")
    run, result = exported_run
    program = tmp_path / "pre.c"
    program.write_text(r"""
#include <stdio.h>
#include "model_config.h"
#include "ee_preprocess.h"
static const float mean[ECG_INPUT_LEADS] = ECG_LEAD_MEAN;
static const float std_[ECG_INPUT_LEADS] = ECG_LEAD_STD;
static float x[ECG_INPUT_SAMPLES * ECG_INPUT_LEADS];
static int8_t q[ECG_INPUT_SAMPLES * ECG_INPUT_LEADS];
int main(void) {
    ee_preprocess_params_t p = {mean, std_, ECG_INPUT_CLIP_SIGMA, ECG_INPUT_SCALE, ECG_INPUT_ZERO_POINT};
    while (fread(x, sizeof x, 1, stdin) == 1) {
        if (ee_preprocess_mv(x, ECG_INPUT_SAMPLES, ECG_INPUT_LEADS, &p, q) != EE_PREPROCESS_OK) return 3;
        fwrite(q, sizeof q, 1, stdout);
    }
    return 0;
}
""")
    exe = tmp_path / "pre"
    build = subprocess.run(["gcc", "-std=c99", "-O2", "-Wall", "-Werror", f"-I{run / 'export'}", f"-I{CORE}", str(program),
                            str(CORE / "ee_preprocess.c"), "-lm", "-o", str(exe)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    records = select_leads(ptbxl, ["I"]).signals[ptbxl.folds == 10][:20].astype(np.float32)
    out = subprocess.run([str(exe)], input=records.tobytes(), capture_output=True)
    assert out.returncode == 0, out.stderr
    c_bytes = np.frombuffer(out.stdout, np.int8).reshape(records.shape)
    std = Standardizer.load(run / "standardization.json")
    inp = result["tflite"]["input"]
    expected = int8_input(records, std.mean, std.std, 3.0, inp["scale"], inp["zero_point"])
    np.testing.assert_array_equal(c_bytes, expected)
    assert len(np.unique(c_bytes)) > 20  # real signal, not a constant


def test_one_lead_model_benches_external_records_on_the_emulator(exported_run, mixed_cinc):
    """bench --data with a 1-lead run: the six-lead CinC record has lead I, so both records are sent."""
    from edge_ecg.bench import bench

    run, _ = exported_run
    summary = bench(run, emulator="tflm", data=mixed_cinc, progress=False, fresh=True)
    assert summary["records"] == 2
    assert summary["identical_to_reference"] == 2  # every record's int8 outputs equal the TFLite Micro reference
