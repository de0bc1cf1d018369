"""Automatic fix (issue 3): `workbench.fixes.search.auto_fix` vs onnxconverter-common's `auto_convert_mixed_precision`.

    .venv/bin/python bench/autofix.py                  # every case; writes bench/work/autofix.json and
                                                       # bench/work/autofix.md (the RESULTS.md section), prints it
    .venv/bin/python bench/autofix.py --bert-base      # also BERT-base from bench/work (over 2 minutes more)
    .venv/bin/python bench/autofix.py tool TOOL CASE   # one tool on one case in this process; prints JSON (last line)
    .venv/bin/python bench/autofix.py check CASE FINAL.onnx...   # runtime and faithful view of final models; JSON

`bench/run.py` calls `bench_autofix_subprocess()` (this harness in its own process) and renders the result
with `report.autofix_section` (`--autofix-bert-base` there adds BERT-base).

Tools (each case and tool is its own subprocess, timed and peak RSS by measure.py):
- `workbench`: `auto_fix(model, inputs=feed)`; its own `runs` count (model forward passes, full or partial).
- `acmp`: `auto_convert_mixed_precision(model, feed, validate_fn, keep_io_types=True)` as shipped. A candidate that
  ONNX Runtime refuses to load raises out of it: the whole call fails.
- `acmp-loadfail`: the same, except that a candidate ONNX Runtime refuses to load counts as a failed attempt (the
  harness wraps its `get_tensor_values_using_ort`; `validate_fn` then says False), the rule the issue sets for ours.
- `acmp-faithful`: as `acmp-loadfail`, but every full run it makes (FP32 reference, attempts, final) is the
  workbench's faithful FP16 replay (each node in its own ORT session, every node boundary a real FP16 tensor)
  instead of one whole-model ORT session: the same bisection, judged as the workbench judges. Each replay is
  one inference run; a candidate that ORT cannot load as a whole (session built, not run), or whose nodes it
  cannot build or run one by one, is a failed attempt.

In every tool process `onnxruntime.InferenceSession` is replaced by a subclass that counts sessions created,
creations that raised, and `run` calls: the raw ORT figures next to each tool's own.

Validation, the same for both: every output finite and ||fp32 - candidate|| / ||fp32|| <= 1e-2 (float64), each
output, against the FP32 model run in ONNX Runtime. For auto_convert_mixed_precision that is its `validate_fn`.
"""

from __future__ import annotations

import contextlib
import json
import resource
import sys
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / "work"
OUT = WORK / "autofix"
RESULTS_JSON = WORK / "autofix.json"
RESULTS_MD = WORK / "autofix.md"
RTOL = 1e-2
TOOLS = ("workbench", "acmp", "acmp-loadfail", "acmp-faithful")
GENERATED = REPO / "sample_models" / "generated"

# name -> (model, feed, what it is). Paths relative to the repo root.
CASES = {
    "legacy_mask_bert": ("sample_models/legacy_mask_bert.onnx", "sample_models/legacy_mask_bert.npz",
                         "tiny BERT, mask `(1 - mask) * float32.min`"),
    "layernorm_pow": ("sample_models/layernorm_pow.onnx", "sample_models/layernorm_pow.npz",
                      "decomposed LayerNorm, `Pow` overflows"),
    "cancellation": ("sample_models/cancellation.onnx", "sample_models/cancellation.npz",
                     "`x + 2048 - 2048`, no inf, wrong numbers"),
    "minilm_legacy": ("sample_models/generated/minilm_legacy.onnx", "sample_models/generated/minilm_legacy.npz",
                      "all-MiniLM-L6-v2, legacy mask"),
    "multi_fault": ("bench/work/multi_fault.onnx", "bench/work/multi_fault.npz",
                    "8 blocks, each with a decomposed LayerNorm whose `Pow` overflows (bench/multi_fault.py)"),
}
BERT_BASE = ("bench/work/bert_base_fp32.onnx", "bench/work/feed.npz", "BERT-base (random weights), legacy mask")


# ------------------------------------------------------------------ counting ONNX Runtime


class OrtCount:
    sessions = 0  # created
    failed = 0  # creations that raised (the model did not load)
    runs = 0  # InferenceSession.run calls

    @classmethod
    def as_dict(cls) -> dict:
        return {"sessions": cls.sessions, "failed_sessions": cls.failed, "runs": cls.runs}


def count_ort() -> None:
    """Replace onnxruntime.InferenceSession by a counting subclass (looked up at call time by both tools)."""
    import onnxruntime as ort

    base = ort.InferenceSession

    class Counted(base):
        def __init__(self, *args, **kwargs):
            try:
                super().__init__(*args, **kwargs)
            except Exception:
                OrtCount.failed += 1
                raise
            OrtCount.sessions += 1

        def run(self, *args, **kwargs):
            OrtCount.runs += 1
            return super().run(*args, **kwargs)

    ort.InferenceSession = Counted


# ------------------------------------------------------------------ shared measures


def load_feed(path: str) -> dict:
    with np.load(REPO / path) as data:
        return {k: data[k] for k in data.files}


def rel_l2(ref: np.ndarray, got: np.ndarray) -> tuple[float | None, int]:
    """(||ref - got|| / ||ref|| in float64, or None when got has non-finite values; non-finite count)."""
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    nonfinite = int(np.count_nonzero(~np.isfinite(got)))
    if nonfinite or ref.shape != got.shape:
        return None, nonfinite
    denominator = float(np.sqrt(np.sum(ref * ref)))
    return float(np.sqrt(np.sum((ref - got) ** 2)) / denominator) if denominator else 0.0, 0


def validate(res_fp32, res_candidate) -> bool:
    """The criterion for both tools: every output finite, relative L2 <= 1e-2."""
    if res_candidate is LOAD_FAILED:
        return False
    for ref, got in zip(res_fp32, res_candidate):
        error, _ = rel_l2(ref, got)
        if error is None or error > RTOL:
            return False
    return True


def fp16_share(proto) -> dict:
    """Float elements of initializers and Constant tensors (all graphs): how many are FP16."""
    from onnx import TensorProto

    counts = {TensorProto.FLOAT: 0, TensorProto.FLOAT16: 0}

    def add(tensor):
        if tensor.data_type in counts:
            counts[tensor.data_type] += int(np.prod(tensor.dims, dtype=np.int64))

    def walk(graph):
        for tensor in graph.initializer:
            add(tensor)
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    add(attr.t)
                for t in attr.tensors:
                    add(t)
                if attr.HasField("g"):
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)

    walk(proto.graph)
    fp32, fp16 = counts[TensorProto.FLOAT], counts[TensorProto.FLOAT16]
    return {"fp16_elements": fp16, "fp32_elements": fp32, "fp16_share": fp16 / max(fp16 + fp32, 1)}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


# ------------------------------------------------------------------ one tool, in this process


LOAD_FAILED = object()  # what the acmp-loadfail wrapper returns for a candidate ORT cannot load


def faithful_values(model, input_feed, output_names=None, sess_options=None):
    """Drop-in for amp.get_tensor_values_using_ort: the model's outputs from a node-by-node FP16-faithful replay."""
    from workbench.engines.node_by_node import NodeRunner, replay
    from workbench.ir.graph import GraphIndex

    index = GraphIndex(model.graph, list(model.opset_import))
    key = (model.ir_version, tuple((o.domain, o.version) for o in model.opset_import))
    if key not in _RUNNERS:  # one session cache for every attempt (sessions are keyed by node signature)
        _RUNNERS[key] = NodeRunner(model.opset_import, model.ir_version)
    values = replay(index, _RUNNERS[key], dict(input_feed))
    FaithfulCount.runs += 1
    return [values[name] for name in (output_names or [o.name for o in model.graph.output])]


_RUNNERS: dict = {}


class FaithfulCount:
    runs = 0  # whole-model faithful replays (each one inference run)


def tool_acmp(proto, feed: dict, loadfail: bool, faithful: bool = False) -> dict:
    from onnxconverter_common import auto_mixed_precision as amp
    from onnxconverter_common import float16

    conversions: list[list[str]] = []  # the node_block_list of every conversion: the attempts, then the final one
    convert = float16.convert_float_to_float16

    def recording_convert(*args, **kwargs):
        conversions.append(list(kwargs.get("node_block_list") or []))
        return convert(*args, **kwargs)

    float16.convert_float_to_float16 = recording_convert  # amp calls it as float16.convert_float_to_float16

    probe = {}
    add_dtypes = amp.add_missing_dtypes_using_ort

    def counted_add_dtypes(*args, **kwargs):
        before = OrtCount.runs
        try:
            return add_dtypes(*args, **kwargs)
        finally:
            probe["runs"] = OrtCount.runs - before

    amp.add_missing_dtypes_using_ort = counted_add_dtypes

    load_errors: list[str] = []
    if faithful:
        ort_values = amp.get_tensor_values_using_ort

        def oracle(model, input_feed, output_names=None, sess_options=None):
            if output_names is not None:  # the dtype probe: any runtime gives the dtypes
                return ort_values(model, input_feed, output_names, sess_options)
            import onnxruntime as ort

            # A model ORT refuses to load is a failed attempt here too (the replay alone does not check the
            # graph's declared types); the session is only built, never run.
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
            return faithful_values(model, input_feed)

        amp.get_tensor_values_using_ort = oracle
    if loadfail:
        get_values = amp.get_tensor_values_using_ort

        def tolerant_get_values(*args, **kwargs):
            try:
                return get_values(*args, **kwargs)
            except Exception as exc:  # the candidate did not load (or run): a failed attempt, not a crash
                load_errors.append(error_text(exc))
                return LOAD_FAILED

        amp.get_tensor_values_using_ort = tolerant_get_values

    op_blocked = sorted(n.name for n in proto.graph.node if n.op_type in float16.DEFAULT_OP_BLOCK_LIST)
    start = time.perf_counter()
    error, final = None, None
    try:
        with contextlib.redirect_stdout(sys.stderr):  # its progress prints go to the .err log
            final = amp.auto_convert_mixed_precision(proto, feed, validate_fn=validate, keep_io_types=True)
    except Exception as exc:
        error = error_text(exc)
        traceback.print_exc()
    seconds = time.perf_counter() - start
    blocked = sorted(set(conversions[-1]) | set(op_blocked)) if final is not None else []
    return {
        "ok": final is not None, "error": error, "final_proto": final, "seconds": seconds,
        # every run is a full forward pass (dtype probe, FP32 reference, attempts, final); faithful: replays + probe
        "runs": (FaithfulCount.runs + probe.get("runs", 0)) if faithful else OrtCount.runs,
        "attempts": max(len(conversions) - (1 if final is not None else 0), 0),  # bisection attempts
        "conversions": len(conversions), "probe_runs": probe.get("runs", 0),
        "load_errors": sorted(set(load_errors)), "load_failures": len(load_errors),
        "kept_fp32": blocked, "op_type_blocked": op_blocked, "clamped": [], "fixes": [],
    }


def tool_workbench(proto, feed: dict) -> dict:
    try:
        from workbench.fixes.search import auto_fix
    except ImportError as exc:
        return {"available": False, "error": f"workbench.fixes.search not available yet ({error_text(exc)})"}
    start = time.perf_counter()
    try:
        result = auto_fix(proto, inputs=feed, second_engine=False)  # the search alone is timed against the other tools
    except Exception as exc:
        traceback.print_exc()
        return {"ok": False, "error": error_text(exc), "final_proto": None, "seconds": time.perf_counter() - start,
                "runs": None, "kept_fp32": [], "clamped": [], "fixes": []}
    seconds = time.perf_counter() - start
    after = {name: {"rel_l2": d.rel_l2, "max_abs": d.max_abs, "nonfinite": d.nonfinite, "ok": d.ok}
             for name, d in result.after.outputs.items()}
    attempts = getattr(result, "attempts", None)
    return {
        "ok": bool(result.ok), "error": None, "final_proto": result.model.proto, "seconds": seconds,
        "runs": int(result.runs), "attempts": len(attempts) if attempts is not None else None,
        "kept_fp32": list(result.kept_fp32), "clamped": list(result.clamped),
        "fixes": [{"name": f.name, "description": f.description} for f in result.fixes], "after": after,
    }


def run_tool(tool: str, case: str) -> dict:
    """One tool on one case; the final model goes to bench/work/autofix/<case>.<tool>.onnx."""
    import onnx

    model_path, feed_path, _ = case_files(case)
    count_ort()
    proto = onnx.load(str(REPO / model_path))  # loading is not timed
    feed = load_feed(feed_path)
    nodes = len(proto.graph.node)
    unnamed = sum(1 for n in proto.graph.node if not n.name)
    if tool == "workbench":
        out = tool_workbench(proto, feed)
    elif tool in ("acmp", "acmp-loadfail", "acmp-faithful"):
        out = tool_acmp(proto, feed, loadfail=tool != "acmp", faithful=tool == "acmp-faithful")
    else:
        raise SystemExit(f"unknown tool {tool!r}; one of {', '.join(TOOLS)}")
    out = {"tool": tool, "case": case, "available": True, "nodes": nodes, "unnamed_nodes": unnamed, **out,
           "ort": OrtCount.as_dict(), "peak_rss_mib": peak_rss_mib()}
    final = out.pop("final_proto", None)
    out["final"] = None
    if final is not None:
        out.update(fp16_share(final))
        path = OUT / f"{case}.{tool}.onnx"
        OUT.mkdir(parents=True, exist_ok=True)
        onnx.save(final, str(path))
        out["final"] = str(path.relative_to(REPO))
    return out


# ------------------------------------------------------------------ cross-check of final models


def check(case: str, finals: list[str]) -> dict:
    """Each final model two ways: plain ONNX Runtime CPU (runtime) and the workbench's faithful FP16 replay."""
    import onnxruntime as ort

    import workbench

    model_path, feed_path, _ = case_files(case)
    feed = load_feed(feed_path)
    fp32 = ort.InferenceSession(str(REPO / model_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in fp32.get_outputs()]
    want = dict(zip(names, fp32.run(None, feed)))
    results = {}
    for final in finals:
        runtime: dict = {}
        try:
            session = ort.InferenceSession(str(REPO / final), providers=["CPUExecutionProvider"])
            got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
            outputs = {}
            for name in names:
                error, nonfinite = rel_l2(want[name], got[name])
                outputs[name] = {"rel_l2": error, "nonfinite": nonfinite}
            runtime = {"loads": True, "outputs": outputs,
                       "ok": all(o["rel_l2"] is not None and o["rel_l2"] <= RTOL for o in outputs.values())}
        except Exception as exc:
            runtime = {"loads": False, "ok": False, "error": error_text(exc)}
        try:
            report = workbench.diagnose(str(REPO / model_path), candidate=str(REPO / final), inputs=feed)
            faithful = {"verdict": report.verdict,
                        "outputs": {n: {"rel_l2": d.rel_l2, "nonfinite": d.nonfinite, "ok": d.ok}
                                    for n, d in report.outputs.items()},
                        "roots": [r.node for r in report.roots]}
        except Exception as exc:
            faithful = {"verdict": None, "error": error_text(exc)}
        results[final] = {"runtime": runtime, "faithful": faithful}
    return results


# ------------------------------------------------------------------ the harness


def case_files(case: str) -> tuple[str, str, str]:
    if case == "bert_base":
        return BERT_BASE
    if case not in CASES:
        raise SystemExit(f"unknown case {case!r}; one of {', '.join([*CASES, 'bert_base'])}")
    return CASES[case]


def _json_default(value):
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def _last_json(text: str) -> dict | None:
    lines = [line for line in text.strip().splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def prepare(cases: list[str]) -> dict:
    """Export what is missing: MiniLM (sample_models/build.py, ~10 s) and BERT-base (bench/model.py)."""
    from measure import measure

    python = sys.executable
    made = {}
    if "minilm_legacy" in cases and not (GENERATED / "minilm_legacy.onnx").exists():
        print("exporting MiniLM (legacy mask) into sample_models/generated/", flush=True)
        code = "import sys; sys.path.insert(0, '.'); from sample_models import build; build.export_minilm('legacy')"
        made["minilm_legacy"] = measure([python, "-c", code], WORK / "autofix_export_minilm", cwd=REPO)
    if "multi_fault" in cases:
        import multi_fault

        multi_fault.write(WORK)  # milliseconds, deterministic: always rebuilt
    if "bert_base" in cases and not (REPO / BERT_BASE[0]).exists():
        print("exporting BERT-base into bench/work/", flush=True)
        made["bert_base"] = measure([python, str(HERE / "model.py"), str(WORK)], WORK / "autofix_export_bert", cwd=REPO)
    for case, result in made.items():
        if result.returncode != 0:
            raise SystemExit(f"bench: exporting {case} failed:\n{result.text()[-2000:]}")
    return made


def bench_autofix(bert_base: bool = False) -> dict:
    """Every case, every tool in its own subprocess, then the cross-check; writes autofix.json, returns it."""
    from measure import measure

    WORK.mkdir(exist_ok=True)
    OUT.mkdir(parents=True, exist_ok=True)
    cases = [*CASES, *(["bert_base"] if bert_base else [])]
    prepare(cases)
    python = str(Path(sys.executable).relative_to(REPO)) if Path(sys.executable).is_relative_to(REPO) else sys.executable
    script = str(Path(__file__).resolve().relative_to(REPO))
    results: dict = {"cases": {}, "bert_base_included": bert_base, "rtol": RTOL}
    for case in cases:
        model_path, feed_path, about = case_files(case)
        entry = {"model": model_path, "feed": feed_path, "about": about, "tools": {}}
        for tool in TOOLS:
            cmd = [python, script, "tool", tool, case]
            print(f"$ {' '.join(cmd)}", flush=True)
            run = measure(cmd, OUT / f"{case}.{tool}", cwd=REPO)
            out = _last_json(run.stdout.read_text(errors="replace")) if run.returncode == 0 else None
            if out is None:
                tail = " ".join(run.text().strip().splitlines()[-3:])[-400:]
                out = {"tool": tool, "case": case, "available": True, "ok": False, "final": None,
                       "error": f"process exited {run.returncode}: {tail}"}
            out["process"] = {"cmd": " ".join(cmd), "seconds": run.seconds, "peak_mib": run.peak_mib,
                              "returncode": run.returncode, "others_cpu_s": run.others_cpu_s}
            entry["tools"][tool] = out
            print(f"  {summary(out)}", flush=True)
        finals = [t["final"] for t in entry["tools"].values() if t.get("final")]
        if finals:
            cmd = [python, script, "check", case, *finals]
            print(f"$ {' '.join(cmd)}", flush=True)
            run = measure(cmd, OUT / f"{case}.check", cwd=REPO)
            checked = _last_json(run.stdout.read_text(errors="replace")) if run.returncode == 0 else None
            if checked is None:
                checked = {f: {"runtime": {"ok": False, "error": f"check exited {run.returncode}"},
                               "faithful": {"verdict": None, "error": f"check exited {run.returncode}"}} for f in finals}
            entry["check_seconds"] = run.seconds
            for tool in entry["tools"].values():
                if tool.get("final"):
                    tool["check"] = checked[tool["final"]]
                    print(f"  {tool['tool']}: runtime {view(tool['check']['runtime'])}, "
                          f"faithful {faithful_text(tool['check']['faithful'])}", flush=True)
        results["cases"][case] = entry
    RESULTS_JSON.write_text(json.dumps(results, indent=1, default=_json_default))
    print(f"wrote {RESULTS_JSON.relative_to(REPO)}", flush=True)
    return results


def bench_autofix_subprocess(bert_base: bool = False) -> dict:
    """`bench_autofix` in a fresh process (what bench/run.py calls), then its JSON.

    Linux starts a child's peak RSS at the RSS its parent had when it exec'd (exec_mmap keeps the old mm's
    high-water mark), so children spawned from run.py, which has held BERT-base in memory, would all report
    at least that. Spawned from this small process instead, the small cases' peaks are their own.
    """
    import subprocess

    cmd = [sys.executable, str(Path(__file__).resolve()), *(["--bert-base"] if bert_base else [])]
    print(f"$ {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)
    return json.loads(RESULTS_JSON.read_text())


def summary(out: dict) -> str:
    if not out.get("available", True):
        return f"{out['tool']}: {out['error']}"
    proc = out.get("process", {})
    head = f"{out['tool']}: {'ok' if out.get('ok') else 'FAILED'}"
    if out.get("error"):
        head += f" ({out['error'][:160]})"
    kept = out.get("kept_fp32") or []
    ort_counts = out.get("ort", {})
    return (f"{head}; runs {out.get('runs')}, ORT sessions {ort_counts.get('sessions')} "
            f"(+{ort_counts.get('failed_sessions')} failed to load), FP32 nodes {len(kept)} {kept[:6]}, "
            f"{out.get('seconds', 0):.1f} s in the tool, process {proc.get('seconds', 0):.1f} s, "
            f"peak {proc.get('peak_mib', 0):.0f} MiB")


def view(runtime: dict) -> str:
    if not runtime.get("loads", False):
        return f"does not load ({runtime.get('error', '?')[:120]})"
    worst = [o["rel_l2"] for o in runtime["outputs"].values()]
    if any(w is None for w in worst):
        return "non-finite outputs"
    return f"rel-L2 {max(worst):.1e}"


def faithful_text(faithful: dict) -> str:
    if faithful.get("verdict") is None:
        return f"error ({faithful.get('error', '?')[:120]})"
    worst = [o["rel_l2"] for o in faithful["outputs"].values()]
    finite = [w for w in worst if w is not None and np.isfinite(w)]
    return f"{faithful['verdict']}" + (f", rel-L2 {max(finite):.1e}" if finite and len(finite) == len(worst) else "")


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(REPO))
    if argv[:1] == ["tool"] and len(argv) == 3:
        print(json.dumps(run_tool(argv[1], argv[2]), default=_json_default))
        return 0
    if argv[:1] == ["check"] and len(argv) >= 3:
        print(json.dumps(check(argv[1], argv[2:]), default=_json_default))
        return 0
    if argv and argv != ["--bert-base"]:
        print(__doc__, file=sys.stderr)
        return 2
    import report

    results = bench_autofix(bert_base=argv == ["--bert-base"])
    text = report.autofix_section(results)
    RESULTS_MD.write_text(text + "\n")
    print("\n" + text)
    print(f"\n(also in {RESULTS_MD.relative_to(REPO)}; `bench/run.py` puts it into bench/RESULTS.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
