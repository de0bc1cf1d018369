"""Benchmark of the engines (issue 10): diagnose against Polygraphy and against the floor, in one run.

    .venv/bin/python bench/engine.py      # after bench/model.py has exported BERT-base into bench/work/

On BERT-base (random weights, legacy mask, sequence 128), once with its weights inside the .onnx
file and once with them as external data: `workbench diagnose` with the emulating engine (the
default) and with `--engine ort-kernels`; Polygraphy's layerwise comparison (FP32 capture of every
tensor, then the FP16 run compared to it); and the floor, two plain ONNX Runtime sessions (FP32 and
FP16) built and run once each. Each in its own process (measure.py). Writes bench/ENGINE.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from measure import machine  # noqa: E402
from run import FEED, FP16, FP32, PG_FEED, REF_JSON, WORK, rel, run, tool  # noqa: E402

FLOOR = """
import sys, numpy as np, onnxruntime as ort
feed = dict(np.load(sys.argv[3]))
for path in sys.argv[1:3]:
    options = ort.SessionOptions(); options.log_severity_level = 3
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    session.run(None, feed)
"""


def external_pair() -> tuple[Path, Path]:
    """The same FP32 and FP16 models with their weights as external data (as every large model has them)."""
    fp32, fp16 = WORK / "bert_base_ext.onnx", WORK / "bert_base_ext_fp16.onnx"
    if not fp32.exists():
        script = ("import onnx, sys; m = onnx.load(sys.argv[1]); "
                  "onnx.save(m, sys.argv[2], save_as_external_data=True, location=sys.argv[3])")
        run([tool("python"), "-c", script, rel(FP32), rel(fp32), fp32.name + ".data"], "external_fp32")
    if not fp16.exists():
        run([tool("workbench"), "convert", rel(fp32), "-o", rel(fp16)], "external_convert")
    return fp32, fp16


# Each command runs this many times, interleaved, and its fastest run is kept: on 2 shared cores the same
# command's wall time moved by up to 60% between quarter-hours (diagnose 1.7 s at one time, 2.8 s later).
ROUNDS = 3


def measure_pair(label: str, stem: str, fp32: Path, fp16: Path) -> dict:
    diagnose = [tool("workbench"), "diagnose", rel(fp32), "--candidate", rel(fp16), "--inputs", rel(FEED), "--json"]
    common = ["--onnxrt", "--onnx-outputs", "*", "--load-inputs", rel(PG_FEED)]
    rounds = []
    for _ in range(ROUNDS):
        emulate = run(diagnose, f"{stem}_emulate")
        report = json.loads(emulate.stdout.read_text())
        kernels = run(diagnose + ["--engine", "ort-kernels"], f"{stem}_kernels")
        kernel_report = json.loads(kernels.stdout.read_text())
        floor = run([tool("python"), "-c", FLOOR, rel(fp32), rel(fp16), rel(FEED)], f"{stem}_floor")
        REF_JSON.unlink(missing_ok=True)
        pg_ref = run([tool("polygraphy"), "run", rel(fp32), *common, "--save-outputs", rel(REF_JSON)], f"{stem}_pg_ref")
        pg_cmp = run([tool("polygraphy"), "run", rel(fp16), *common, "--load-outputs", rel(REF_JSON),
                      "--atol", "1e-2", "--rtol", "1e-2"], f"{stem}_pg_cmp", allowed=(0, 1))
        rounds.append({"emulate": emulate, "kernels": kernels, "floor": floor, "report": report,
                       "kernel_report": kernel_report, "polygraphy_s": pg_ref.seconds + pg_cmp.seconds,
                       "polygraphy_mib": max(pg_ref.peak_mib, pg_cmp.peak_mib)})
    best = {key: min((r[key] for r in rounds), key=lambda run_: run_.seconds) for key in ("emulate", "kernels", "floor")}
    fastest_pg = min(rounds, key=lambda r: r["polygraphy_s"])
    return {
        "label": label, "busy": best["emulate"].others_cpu_s, **best,
        "polygraphy_s": fastest_pg["polygraphy_s"], "polygraphy_mib": fastest_pg["polygraphy_mib"],
        "ranges": {key: (min(r[key].seconds for r in rounds), max(r[key].seconds for r in rounds))
                   for key in ("emulate", "kernels", "floor")} | {
                   "polygraphy": (min(r["polygraphy_s"] for r in rounds), max(r["polygraphy_s"] for r in rounds))},
        "roots": sorted({(r["node"], r["kind"]) for rnd in rounds for r in rnd["report"]["roots"]}),
        "kernel_roots": sorted({(r["node"], r["kind"]) for rnd in rounds for r in rnd["kernel_report"]["roots"]}),
    }


def table(rows: list[dict]) -> str:
    lines = [
        "# Engines: diagnose BERT-base against Polygraphy and the floor (issue 10)",
        "",
        f"One run of `bench/engine.py`, {machine()}. BERT-base, random weights, legacy mask, sequence 128.",
        "Wall time and peak RSS of each command in its own process, the fastest of "
        f"{ROUNDS} interleaved runs (ranges below). Floor: two plain ONNX Runtime sessions",
        "(FP32 and FP16) built and run once. Polygraphy: FP32 capture of every tensor plus the FP16 comparison.",
        "",
        "| weights | emulate (default) | ort-kernels | Polygraphy | floor | Polygraphy / emulate | emulate / floor | memory emulate / Polygraphy | root |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        e, k, f = r["emulate"], r["kernels"], r["floor"]
        lines.append(
            f"| {r['label']} | {e.seconds:.2f} s, {e.peak_mib:.0f} MiB | {k.seconds:.2f} s, {k.peak_mib:.0f} MiB | "
            f"{r['polygraphy_s']:.1f} s, {r['polygraphy_mib']:.0f} MiB | {f.seconds:.2f} s, {f.peak_mib:.0f} MiB | "
            f"{r['polygraphy_s'] / e.seconds:.1f}x | {e.seconds / f.seconds:.2f}x | {e.peak_mib / r['polygraphy_mib']:.2f}x | "
            f"{', '.join(f'{n} ({k})' for n, k in r['roots'])}; ort-kernels: {', '.join(n for n, _ in r['kernel_roots'])} |"
        )
    lines += ["", "Wall-time ranges over the runs: " + "; ".join(
        f"{r['label']}: " + ", ".join(f"{key} {low:.2f}-{high:.2f} s" for key, (low, high) in r["ranges"].items())
        for r in rows) + "."]
    lines += ["", "CPU seconds used by other processes during the fastest emulate runs: "
              + ", ".join(f"{r['busy']:.0f} s ({r['label']})" for r in rows) + ".",
              "", "Targets (issue 10): Polygraphy / emulate >= 20x, memory <= 0.6x Polygraphy's, emulate / floor <= 1.5x."]
    return "\n".join(lines) + "\n"


def main() -> int:
    if not FP32.exists():
        run([tool("python"), rel(HERE / "model.py"), rel(WORK)], "export")
    if not FP16.exists():
        run([tool("workbench"), "convert", rel(FP32), "-o", rel(FP16)], "convert")
    rows = [measure_pair("in the .onnx file", "infile", FP32, FP16), measure_pair("external data", "external", *external_pair())]
    text = table(rows)
    (HERE / "ENGINE.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
