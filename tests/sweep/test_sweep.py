"""workbench.sweep on a tiny attention block whose FP16 conversion breaks on fully padded rows only."""

import json

import numpy as np
import pytest
from models import PADDED

import workbench
from workbench.sweep import store as sweep_store


def test_sweep_finds_the_fully_padded_rows_and_groups_them(attention_path, feed_folder, tmp_path):
    result = workbench.sweep(attention_path, inputs=feed_folder, work=tmp_path / "work", workers=1, progress=False)
    padded = {f"feed_{i:02d}.npz" for i in PADDED}
    assert {r["id"] for r in result.failures} == padded
    assert all(r["verdict"] == "nonfinite" for r in result.failures)
    (group,) = result.groups
    assert (group.node, group.kind) == ("Where_5", "constant_out_of_range")
    assert set(group.inputs) == padded
    assert group.line() == "root Where_5 (constant_out_of_range): 3 of 12 inputs (25.0%), all with a fully padded row"
    assert group.line() in result.summary()
    assert json.loads(json.dumps(result.to_dict()))["groups"][0]["count"] == 3


def test_inputs_beyond_the_top_get_their_patterns_root(attention_path, feed_folder, tmp_path):
    result = workbench.sweep(attention_path, inputs=feed_folder, work=tmp_path / "work", workers=1, top=1, progress=False)
    assert len(result.diagnoses) == 1  # one pattern, the worst input diagnosed
    (group,) = result.groups
    assert len(group.inputs) == 3 and len(group.diagnosed) == 1


def test_a_passing_candidate_has_no_groups(attention_path, feed_folder, tmp_path):
    result = workbench.sweep(attention_path, attention_path, inputs=feed_folder, work=tmp_path / "work", workers=1,
                             progress=False)
    assert result.failures == () and result.groups == () and result.diagnoses == {}


def test_an_interrupted_sweep_keeps_its_results_and_resumes_without_recomputing(attention_path, feed_folder, tmp_path,
                                                                               monkeypatch):
    work = tmp_path / "work"
    written = []
    add = sweep_store.ResultStore.add

    def add_then_stop(self, record):  # Ctrl-C right after the 4th result is written
        add(self, record)
        written.append(record["id"])
        if len(written) == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(sweep_store.ResultStore, "add", add_then_stop)
    with pytest.raises(KeyboardInterrupt):
        workbench.sweep(attention_path, inputs=feed_folder, work=work, workers=1, progress=False)
    monkeypatch.setattr(sweep_store.ResultStore, "add", add)
    (results,) = work.glob("sweep-*.jsonl")
    assert [json.loads(line)["id"] for line in results.read_text().splitlines()] == written

    resumed = workbench.sweep(attention_path, inputs=feed_folder, work=work, workers=1, progress=False)
    assert (resumed.stats["computed"], resumed.stats["reused"]) == (8, 4)
    assert len(results.read_text().splitlines()) == 12  # the finished four were not swept again
    fresh = workbench.sweep(attention_path, inputs=feed_folder, work=tmp_path / "fresh", workers=1, progress=False)
    assert _comparable(resumed) == _comparable(fresh)

    again = workbench.sweep(attention_path, inputs=feed_folder, work=work, workers=1, progress=False)
    assert (again.stats["computed"], again.stats["reused"]) == (0, 12)


def test_a_changed_input_is_swept_again(attention_path, feed_folder, tmp_path):
    work = tmp_path / "work"
    workbench.sweep(attention_path, inputs=feed_folder, work=work, workers=1, progress=False)
    np.savez(feed_folder / "feed_05.npz", **__import__("models").feed(99))
    result = workbench.sweep(attention_path, inputs=feed_folder, work=work, workers=1, progress=False)
    assert (result.stats["computed"], result.stats["reused"]) == (1, 11)


def test_two_worker_processes_give_the_same_result(attention_path, feed_folder, tmp_path):
    one = workbench.sweep(attention_path, inputs=feed_folder, work=tmp_path / "a", workers=1, progress=False)
    two = workbench.sweep(attention_path, inputs=feed_folder, work=tmp_path / "b", workers=2, progress=False)
    assert two.stats["backend"] == "2 processes"
    assert _comparable(one) == _comparable(two)


def test_one_npz_with_a_dataset_axis(attention_path, tmp_path):
    feeds = [__import__("models").feed(i, padded_row=2 if i == 1 else None) for i in range(3)]
    path = tmp_path / "dataset.npz"
    np.savez(path, **{k: np.stack([f[k] for f in feeds]) for k in feeds[0]})
    result = workbench.sweep(attention_path, inputs=path, work=tmp_path / "work", workers=1, progress=False)
    assert [r["id"] for r in result.records] == ["dataset.npz[0]", "dataset.npz[1]", "dataset.npz[2]"]
    assert [r["id"] for r in result.failures] == ["dataset.npz[1]"]


def test_the_diagnosis_of_one_input(attention_path, feed_folder, tmp_path):
    result = workbench.sweep(attention_path, inputs=feed_folder, work=tmp_path / "work", workers=1, progress=False)
    diagnosis = result.diagnose("feed_04.npz")
    assert diagnosis.verdict == "nonfinite" and diagnosis.roots[0].node == "Where_5"


def _comparable(result) -> dict:
    """The result without timings; floats to 6 digits, since a process's thread count can reorder a sum."""
    return _rounded({k: v for k, v in result.to_dict().items() if k not in ("stats", "work_file")})


def _rounded(value):
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


def test_a_script_without_a_main_guard_gets_one_line_not_a_hang(tmp_path):
    """Spawned workers import the script again; its sweep then dies in the worker, and the parent must not wait forever."""
    import subprocess
    import sys
    from pathlib import Path

    tests = Path(__file__).resolve().parents[1]
    script = tmp_path / "unguarded.py"
    script.write_text(
        f"import sys; sys.path[:0] = [{str(tests)!r}, {str(tests / 'sweep')!r}]\n"
        "import workbench, models\n"
        "try:\n"
        f"    workbench.sweep(models.masked_attention(), inputs=[models.feed(i) for i in range(4)], work={str(tmp_path / 'w')!r}, workers=2, progress=False)\n"
        "except workbench.WorkbenchError as exc:\n"
        "    print('ERROR', exc)\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.stdout.startswith("ERROR a sweep worker process died") and "__main__" in done.stdout
