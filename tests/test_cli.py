"""The command line as a user runs it: real subprocesses, one-line errors, the user's files untouched."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from workbench.io.model import file_digest

SCRIPT = str(Path(sys.executable).with_name("workbench"))


def run(*args, entry=(SCRIPT,)):
    return subprocess.run([*entry, *map(str, args)], capture_output=True, text=True, timeout=300)


def test_diagnose_json_with_the_workbench_conversion(sample):
    path, _ = sample("legacy_mask_bert")
    result = run("diagnose", path, "--precision", "fp16", "--inputs", path.with_suffix(".npz"), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["verdict"] == "nonfinite" and data["roots"][0]["node"] == "mask_scale"


def test_diagnose_a_given_candidate_via_python_dash_m(sample, tmp_path):
    path, _ = sample("legacy_mask_bert")
    candidate = tmp_path / "fp16.onnx"
    assert run("convert", path, "-o", candidate).returncode == 0
    result = run("diagnose", path, "--candidate", candidate, "--inputs", path.with_suffix(".npz"), "--json",
                 entry=(sys.executable, "-m", "workbench"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["roots"][0]["kind"] == "constant_out_of_range"


def test_text_output_names_verdict_and_root(sample):
    path, _ = sample("layernorm_pow")
    result = run("diagnose", path, "--inputs", path.with_suffix(".npz"))
    assert "DIVERGENT" in result.stdout and "ROOT activation_overflow" in result.stdout


def test_exit_code_is_zero_whatever_the_verdict(sample):
    path, _ = sample("clean_mlp")
    assert run("diagnose", path, "--json").returncode == 0


def broken_inputs(tmp_path, sample):
    path, feed = sample("legacy_mask_bert")
    (tmp_path / "junk.onnx").write_bytes(b"PK\x03\x04 this is a zip, not a model")
    (tmp_path / "half.onnx").write_bytes(path.read_bytes()[:5000])
    np.savez(tmp_path / "wrong_names.npz", ids=feed["input_ids"])
    np.savez(tmp_path / "wrong_dtype.npz", input_ids=feed["input_ids"].astype(np.float32), attention_mask=feed["attention_mask"])
    np.savez(tmp_path / "wrong_rank.npz", input_ids=feed["input_ids"][0], attention_mask=feed["attention_mask"])
    return {
        "missing file": (["diagnose", tmp_path / "nope.onnx"], "no such file"),
        "not onnx": (["diagnose", tmp_path / "junk.onnx"], "not a readable ONNX model"),
        "truncated": (["diagnose", tmp_path / "half.onnx"], "truncated"),
        "wrong names": (["diagnose", path, "--inputs", tmp_path / "wrong_names.npz"], "missing 'input_ids'"),
        "wrong dtype": (["diagnose", path, "--inputs", tmp_path / "wrong_dtype.npz"], "must be int64"),
        "wrong rank": (["diagnose", path, "--inputs", tmp_path / "wrong_rank.npz"], "must have 2 dimensions"),
        "missing inputs file": (["diagnose", path, "--inputs", tmp_path / "none.npz"], "no such inputs file"),
        "unknown node to keep": (["diagnose", path, "--keep-node", "nope"], "no node named 'nope'"),
        "overwrite input": (["convert", path, "-o", path], "refusing to overwrite"),
        "bad option": (["diagnose", path, "--mode", "fast"], "invalid choice"),
        "cuda missing": (["diagnose", path, "--provider", "cuda"], "CUDA is not available"),
        "fix: no such node": (["fix", path, "-o", tmp_path / "o.onnx", "--fix", "keep-fp32=nope"], "no node named 'nope'"),
        "fix: does not apply": (["fix", path, "-o", tmp_path / "o.onnx", "--fix", "mask-constant=sub_10"], "not a constant"),
        "fix: unknown fix": (["fix", path, "-o", tmp_path / "o.onnx", "--fix", "magic=x"], "unknown fix 'magic'"),
        "fix: overwrite input": (["fix", path, "-o", path], "refusing to overwrite"),
        "fix: task output": (["fix", path, "-o", tmp_path / "o.onnx", "--task", "embedding", "--task-output", "nope"], "nope"),
    }


@pytest.mark.parametrize("case", [
    "missing file", "not onnx", "truncated", "wrong names", "wrong dtype", "wrong rank",
    "missing inputs file", "unknown node to keep", "overwrite input", "bad option", "cuda missing",
    "fix: no such node", "fix: does not apply", "fix: unknown fix", "fix: overwrite input", "fix: task output",
])
def test_bad_input_gives_one_line_error_and_leaves_files_alone(tmp_path, sample, case):
    args, message = broken_inputs(tmp_path, sample)[case]
    path, _ = sample("legacy_mask_bert")
    before = file_digest(path)
    result = run(*args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("workbench: error: ")
    assert message in result.stderr and "Traceback" not in result.stderr
    assert file_digest(path) == before


def test_missing_external_data_is_one_line(tmp_path):
    import onnx
    from inline_models import parse_model

    model = parse_model("g (float[4] x) => (float[4] y) { y = Add(x, w) }", w=np.ones(4, np.float32))
    onnx.save_model(model, str(tmp_path / "m.onnx"), save_as_external_data=True, location="m.data", size_threshold=0)
    (tmp_path / "m.data").unlink()
    result = run("diagnose", tmp_path / "m.onnx")
    assert result.returncode == 2 and "external data file 'm.data'" in result.stderr


def test_nodes_lists_the_names_reports_use(sample):
    path, _ = sample("legacy_mask_bert")
    assert "mask_scale\tMul" in run("nodes", path).stdout


def test_fix_writes_a_verified_model_and_json(sample, tmp_path):
    import onnxruntime as ort

    path, feed = sample("legacy_mask_bert")
    out = tmp_path / "fixed.onnx"
    result = run("fix", path, "--precision", "fp16", "--inputs", path.with_suffix(".npz"), "-o", out, "--json",
                 "--task", "embedding")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert {"ok", "kept_fp32", "clamped", "outputs", "runs"} <= set(data)
    assert data["ok"] and data["kept_fp32"] == [] and data["clamped"] == ["val_32"] and data["runs"] >= 3
    assert data["task"]["ok"] and data["task"]["name"] == "sentence embedding"
    output = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    assert np.isfinite(output).all()


def test_fix_exits_4_when_the_fixes_given_do_not_verify_and_says_so(sample, tmp_path):
    path, _ = sample("layernorm_pow")
    out = tmp_path / "fixed.onnx"
    result = run("fix", path, "--inputs", path.with_suffix(".npz"), "-o", out, "--no-auto", "--fix", "keep-fp32=ln_pow")
    assert result.returncode == 4, result.stderr  # not fixed, but no budget was spent: a larger one would not help
    assert "NOT FIXED" in result.stdout and "still failing verification" in result.stdout and out.exists()
    assert "judged by emulate: divergent" in result.stdout and "ort-kernels: divergent" in result.stdout


@pytest.fixture
def masked_then_exp(tmp_path):
    """The in-memory fault model that needs a grown region (five attempts), as files for the CLI."""
    import fp16_fault_models as faults
    import onnx

    from workbench.io.model import full_proto

    onnx.save(full_proto(faults.masked_then_exp()), str(tmp_path / "m.onnx"))
    np.savez(tmp_path / "m.npz", **faults.masked_then_exp_feed())
    return tmp_path / "m.onnx", tmp_path / "m.npz"


def test_fix_exits_1_only_when_the_budget_is_spent(masked_then_exp, tmp_path):
    path, feed = masked_then_exp
    result = run("fix", path, "--inputs", feed, "-o", tmp_path / "fixed.onnx", "--budget", "7", "--json")
    assert result.returncode == 1, result.stderr
    data = json.loads(result.stdout)
    assert not data["ok"] and data["budget_spent"] and data["stopped"] == "budget spent"
    assert data["run_budget"] == 7 and data["runs"] >= 7 and data["attempts"]


def test_fix_within_its_budget_exits_0_and_reports_both_engines(masked_then_exp, tmp_path):
    path, feed = masked_then_exp
    result = run("fix", path, "--inputs", feed, "-o", tmp_path / "fixed.onnx", "--budget", "40")
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert "OK after" in first and "of 40 budgeted model runs" in first
    assert "judged by emulate: ok" in result.stdout and "ort-kernels: ok" in result.stdout


def test_fix_refuses_a_budget_that_is_not_a_positive_number(sample, tmp_path):
    path, _ = sample("clean_mlp")
    result = run("fix", path, "-o", tmp_path / "fixed.onnx", "--budget", "0")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--budget" in result.stderr


def test_memory_budget_option_gives_the_same_json(sample):
    path, _ = sample("legacy_mask_bert")
    args = ["diagnose", path, "--inputs", path.with_suffix(".npz"), "--json"]
    assert json.loads(run(*args, "--memory-budget", "0").stdout) == json.loads(run(*args).stdout)
