"""Benchmark: workbench vs Polygraphy (diagnosis) and vs onnxruntime's float16 tool (conversion), on BERT-base.

    .venv/bin/python bench/run.py        # or `make bench`; run from anywhere, paths are the repo's

Everything heavy runs in its own subprocess, one at a time (see measure.py for how time and
peak memory are taken). Intermediate files go to bench/work/ (git-ignored); the FP32 export
there is reused when present. Writes bench/RESULTS.md and prints it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import autofix  # noqa: E402  (d. automatic fix, issue 3)
import model as bench_model  # noqa: E402
import report  # noqa: E402
import scale  # noqa: E402  (e. memory and time against model size, issue 6)
from measure import Run, checked, machine, measure, versions  # noqa: E402

WORK = HERE / "work"
BIN = Path(sys.executable).parent  # the venv's bin: python, workbench, polygraphy
FP32 = WORK / bench_model.MODEL_FILE
FP16 = WORK / "bert_base_fp16.onnx"
FEED = WORK / bench_model.FEED_FILE
PG_FEED = WORK / bench_model.POLYGRAPHY_FEED_FILE
REF_JSON = WORK / "polygraphy_ref.json"
TOLERANCE = "1e-2"  # Polygraphy's --atol/--rtol; workbench's default --tolerance is also 1e-2 (relative L2)


def rel(path: Path) -> str:
    """`path` as the commands are shown: relative to the repo root, where they run."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def tool(name: str) -> str:
    return rel(BIN / name)


def run(cmd: list, stem: str, allowed: tuple[int, ...] = (0,)) -> Run:
    print(f"$ {' '.join(map(str, cmd))}", flush=True)
    result = checked(measure([str(c) for c in cmd], WORK / stem, cwd=REPO), allowed)
    print(f"  {result.seconds:.1f} s, peak {result.peak_mib:.0f} MiB, exit {result.returncode}", flush=True)
    return result


# ------------------------------------------------------------------ 1-2. model, feed, FP16 candidate


def prepare() -> dict:
    """Export (or reuse) BERT-base, write the feeds, and convert it with `workbench convert`."""
    WORK.mkdir(exist_ok=True)
    reused = FP32.exists()
    export = run([tool("python"), rel(HERE / "model.py"), rel(WORK)], "export")
    convert = run([tool("workbench"), "convert", rel(FP32), "-o", rel(FP16)], "convert")
    return {"export": export, "export_reused": reused, "convert": convert,
            "convert_says": convert.stdout.read_text().strip(), "graph": graph_facts(FP32)}


def graph_facts(path: Path) -> dict:
    """Node count, tensor -> producing node, and the tensor `mask_scale` writes (for reading Polygraphy's log)."""
    # The weights are not loaded: a child's peak RSS as os.wait4 reports it is at least this
    # process's RSS when it forks the child, so this process must stay small (see measure.py).
    graph = _nodes_only(path)
    producer = {out: (node.name, node.op_type) for node in graph.node for out in node.output}
    mask = next(node for node in graph.node if node.name == "mask_scale")
    return {"nodes": len(graph.node), "producer": producer, "mask_out": mask.output[0],
            "mask_inputs": list(mask.input), "size_mib": path.stat().st_size / 2**20}


def _nodes_only(path: Path):
    """The graph's nodes without its weights, read in a subprocess so this process never holds them."""
    import onnx

    script = (
        "import onnx, sys; m = onnx.load(sys.argv[1]); del m.graph.initializer[:]; "
        "sys.stdout.buffer.write(m.graph.SerializeToString())"
    )
    data = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, check=True).stdout
    graph = onnx.GraphProto()
    graph.ParseFromString(data)
    return graph


# ------------------------------------------------------------------ 3a. workbench diagnose


def bench_workbench() -> dict:
    cmd = [tool("workbench"), "diagnose", rel(FP32), "--candidate", rel(FP16), "--inputs", rel(FEED), "--json"]
    result = run(cmd, "workbench_diagnose")
    return {"run": result, "report": json.loads(result.stdout.read_text())}


# ------------------------------------------------------------------ 3b. Polygraphy layerwise


def bench_polygraphy(graph: dict) -> dict:
    """Every tensor marked as an output: an FP32 reference run saved to JSON, then the FP16 run compared to it."""
    common = ["--onnxrt", "--onnx-outputs", "*", "--load-inputs", rel(PG_FEED)]
    REF_JSON.unlink(missing_ok=True)
    ref = run([tool("polygraphy"), "run", rel(FP32), *common, "--save-outputs", rel(REF_JSON)], "polygraphy_ref")
    cmp = run([tool("polygraphy"), "run", rel(FP16), *common, "--load-outputs", rel(REF_JSON),
               "--atol", TOLERANCE, "--rtol", TOLERANCE], "polygraphy_compare", allowed=(0, 1))
    return {"ref": ref, "cmp": cmp, "ref_json_mib": REF_JSON.stat().st_size / 2**20,
            "log_lines": [len(r.text().splitlines()) for r in (ref, cmp)], **read_polygraphy(cmp.text(), graph)}


def read_polygraphy(log: str, graph: dict) -> dict:
    """What a reader of the comparison log learns: how many tensors fail, which first, and is the cause named."""
    compared = re.findall(r"Comparing Output: '([^']+)'", log)
    failed = re.findall(r"FAILED \| Output: '([^']+)'", log)
    mask_out = graph["mask_out"]
    constant_lines = [line for line in log.splitlines() if re.search(r"-3\.4028\d*e\+38", line)]
    constant_tensors = list(dict.fromkeys(re.findall(r": (\S+) \| Stats: .*-3\.4028\d*e\+38", log)))
    return {
        "compared": len(compared), "failed": failed,
        "first_failed_node": graph["producer"].get(failed[0], ("?", "?")) if failed else None,
        "mask_scale_mentions": log.count("mask_scale"),
        "mask_out_mentions": len(re.findall(rf"(?<![\w.]){re.escape(mask_out)}(?![\w.])", log)),
        "mask_out_failed_rank": failed.index(mask_out) + 1 if mask_out in failed else None,
        "constant_lines": len(constant_lines), "constant_tensors": constant_tensors,
        "summary": next((line for line in log.splitlines() if "Accuracy Summary" in line), ""),
    }


# ------------------------------------------------------------------ 3c. conversion


def bench_conversion() -> dict:
    """Each converter in its own process: in-process best-of-N time, peak RSS, does the result run."""
    results = {}
    for name in ("workbench", "ort"):
        result = run([tool("python"), rel(HERE / "conversion.py"), name, rel(FP32), rel(FEED)], f"conversion_{name}")
        results[name] = {"run": result, **json.loads(result.stdout.read_text().strip().splitlines()[-1])}
    return results


def main() -> int:
    info = {"machine": machine(), "versions": versions()}
    setup = prepare()
    diag = {"workbench": bench_workbench(), "polygraphy": bench_polygraphy(setup["graph"])}
    conv = bench_conversion()
    fix = autofix.bench_autofix_subprocess(bert_base="--autofix-bert-base" in sys.argv[1:])  # d. see bench/autofix.py
    sizes, activations = scale.bench_scale(), scale.bench_activations()
    corpus_run = run([tool("python"), rel(HERE / "corpus.py")], "corpus")
    import corpus  # (f. the corpus, issue 6) only now: it loads onnx, and measured children count this process's RSS
    corpus_text = corpus.corpus_section(json.loads((WORK / "corpus.json").read_text()), corpus_run.seconds)
    text = report.render(info, setup, diag, conv, fix, scale.scale_section(sizes, activations) + "\n\n" + corpus_text)
    (HERE / "RESULTS.md").write_text(text)
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
