"""bench/RESULTS.md from the measurements of run.py: tables with absolute figures and ratios."""

from __future__ import annotations

import math

from measure import Run


def faster(ours: float, theirs: float) -> str:
    ratio = theirs / ours
    return f"{ratio:.1f}x faster" if ratio >= 1 else f"{1 / ratio:.1f}x slower"


def less_memory(ours: float, theirs: float) -> str:
    ratio = theirs / ours
    return f"{ratio:.1f}x less memory" if ratio >= 1 else f"{1 / ratio:.1f}x more memory"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def command(run: Run) -> str:
    return " ".join(f"'{c}'" if c == "*" else c for c in run.cmd)


def render(info, setup, diag, conv, fix=None, scale_text: str | None = None) -> str:
    parts = [
        "# Benchmark: workbench on BERT-base (legacy attention mask, FP16)",
        "Written by `bench/run.py`; every figure below is from its last run. Re-run with `make bench`.\n"
        "Elsewhere, each written by its own script: [ENGINE.md](ENGINE.md) (the engines against Polygraphy and the "
        "plain-run floor, weights in the file and as external data), [REAL_MODELS.md](REAL_MODELS.md) (fixes on real "
        "models against onnxconverter-common), [SWEEP.md](SWEEP.md) (dataset sweep throughput), [CORPUS.md](CORPUS.md).",
        machine_section(info, setup),
        diagnosis_section(diag, setup["graph"]),
        conversion_section(conv),
        *([autofix_section(fix)] if fix else []),
        *([scale_text] if scale_text else []),
        commands_section(setup, diag, conv),
        method_section(setup, diag, conv),
    ]
    return "\n\n".join(parts) + "\n"


def machine_section(info, setup) -> str:
    m, g = info["machine"], setup["graph"]
    export = "reused from an earlier run" if setup["export_reused"] else f"exported in {setup['export'].seconds:.0f} s"
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    return "\n".join([
        "## Setup",
        f"- Date: {m['date']}",
        f"- Machine: {m['cpu']}, {m['ram']} RAM, {m['os']}. CPU only (CPUExecutionProvider).",
        f"- Versions: {versions}",
        f"- Model: `transformers.BertConfig()` defaults (hidden 768, 12 layers, 12 heads, vocab 30522), "
        f"`torch.manual_seed(0)` random weights, no pooler, exported by `sample_models/build.py:_export_bert(legacy=True)` "
        f"(dynamo, opset 17): {g['nodes']} nodes, {g['size_mib']:.0f} MiB; {export}. "
        f"The mask Mul `mask_scale` writes tensor `{g['mask_out']}`.",
        "- Feed: batch 1, sequence 128, `input_ids` from `numpy.random.default_rng(0)` in [0, 30522), "
        "`attention_mask` 1 with the last 28 positions 0.",
        f"- FP16 candidate: `workbench convert` ({setup['convert'].seconds:.1f} s wall, "
        f"peak {setup['convert'].peak_mib:.0f} MiB): {setup['convert_says']}",
    ])


def diagnosis_section(diag, graph) -> str:
    wb, pg = diag["workbench"], diag["polygraphy"]
    w, ref, cmp = wb["run"], pg["ref"], pg["cmp"]
    pg_s, pg_peak = ref.seconds + cmp.seconds, max(ref.peak_mib, cmp.peak_mib)
    roots = wb["report"]["roots"]
    root = ", ".join(f"`{r['node']}` ({r['op_type']}, {r['kind']})" for r in roots) or "none"
    first = pg["failed"][0] if pg["failed"] else None
    rows = [
        ["Wall time", f"{w.seconds:.1f} s", f"{pg_s:.1f} s ({ref.seconds:.1f} ref + {cmp.seconds:.1f} compare)",
         faster(w.seconds, pg_s)],
        ["Peak RSS", f"{w.peak_mib:.0f} MiB", f"{pg_peak:.0f} MiB (ref {ref.peak_mib:.0f}, compare {cmp.peak_mib:.0f})",
         less_memory(w.peak_mib, pg_peak)],
        ["Written to disk", "nothing", f"reference outputs {pg['ref_json_mib']:.0f} MiB (JSON)", ""],
        ["Output to read", f"{len(w.text().splitlines())} lines (JSON)",
         f"{sum(pg['log_lines'])} log lines ({pg['log_lines'][0]} + {pg['log_lines'][1]})", ""],
        ["Exit status", str(w.returncode), f"{ref.returncode}, {cmp.returncode}", ""],
        ["Verdict / flagged", f"`{wb['report']['verdict']}`, {len(roots)} root: {root}",
         f"{len(pg['failed'])} of {pg['compared']} compared tensors FAILED", ""],
        ["Names `mask_scale`", "yes, as the root" if any(r["node"] == "mask_scale" for r in roots) else "no",
         f"{pg['mask_scale_mentions']} mentions of the node name; its output `{graph['mask_out']}`: "
         f"{pg['mask_out_mentions']} mentions, FAILED #{pg['mask_out_failed_rank']} in log order", ""],
        ["Names the -3.4e38 constant", "yes" if any("3.4028" in r["explanation"] for r in roots) else "no",
         f"{pg['constant_lines']} log lines show -3.4028e+38 (as min/values of FP32 tensors: "
         f"{', '.join(f'`{t}`' for t in pg['constant_tensors'][:6]) or 'none'}"
         f"{', ...' if len(pg['constant_tensors']) > 6 else ''}); no line names the constant as the cause", ""],
    ]
    first_node = pg["first_failed_node"]
    return "\n".join([
        "## a/b. Diagnosing the FP16 model: `workbench diagnose` vs Polygraphy layerwise comparison",
        table(["", "workbench diagnose", "Polygraphy (`--onnx-outputs '*'`, 2 runs)", "workbench vs Polygraphy"], rows),
        "",
        "What each reported as the cause:",
        "- workbench: " + ("; ".join(f"root `{r['node']}` ({r['kind']}): {r['explanation']}" for r in roots) or "no root")
        + f". first_nonfinite: `{wb['report'].get('first_nonfinite')}`; warnings: {len(wb['report'].get('warnings', []))}.",
        f"- Polygraphy: `{pg['summary'].strip()}`. The first FAILED tensor in its log is `{first}` "
        f"(written by node `{first_node[0]}`, {first_node[1]}, found by looking the tensor up in the graph; "
        f"Polygraphy prints tensor names, not node names) and {len(pg['failed']) - 1} more tensors after it FAILED. "
        "It reports which tensors differ, not why; no line points at the mask constant or says 0 x -inf.",
    ])


def conversion_section(conv) -> str:
    wb, ort = conv["workbench"], conv["ort"]

    def times(r):
        return f"{r['best_s']:.2f} s (best of {len(r['seconds'])}: {', '.join(f'{s:.2f}' for s in r['seconds'])})"

    def output(r):
        if not r["loads_in_ort"]:
            return f"does not load: {r['error']}"
        if r["nonfinite_outputs"]:
            return f"loads; {r['nonfinite_outputs']} of {r['output_elements']} outputs non-finite"
        return f"loads; all finite, relative L2 {r['rel_l2_vs_fp32']:.1e} vs FP32"

    rows = [
        ["Conversion time (in-process, loading excluded)", times(wb), times(ort), faster(wb["best_s"], ort["best_s"])],
        ["Peak RSS of the process (load + conversions)", f"{wb['peak_rss_mib']:.0f} MiB", f"{ort['peak_rss_mib']:.0f} MiB",
         less_memory(wb["peak_rss_mib"], ort["peak_rss_mib"])],
        ["Process wall time (incl. loading and the ORT check)", f"{wb['run'].seconds:.1f} s", f"{ort['run'].seconds:.1f} s", ""],
        ["FP16 initializers / Casts added", f"{wb['fp16_initializers']} / {wb['casts_added']}",
         f"{ort['fp16_initializers']} / {ort['casts_added']}", ""],
        ["`mask_scale` constant after conversion", constant(wb), constant(ort), ""],
        ["onnxruntime InferenceSession + the feed", output(wb), output(ort), ""],
    ]
    return "\n".join([
        "## c. FP16 conversion: `workbench.convert_to_fp16` vs `onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)`",
        table(["", "workbench", "onnxruntime float16", "workbench vs ORT"], rows),
        "",
        "The two converters do different things on purpose: ORT's clamps float constants to ±65504 (its `max_finite_val`), "
        "so the -3.4e38 mask constant becomes -65504 and the output stays finite; the workbench casts as an FP16 engine does "
        "(no clamping; `--clamp-constants` opts in), so its candidate reproduces the NaN that is being diagnosed.",
    ])


def constant(r) -> str:
    values = r.get("mask_constant") or []
    return ", ".join("-inf" if v == -math.inf else f"{v:g}" for v in values) or "not found"


def commands_section(setup, diag, conv) -> str:
    runs = [setup["export"], setup["convert"], diag["workbench"]["run"], diag["polygraphy"]["ref"],
            diag["polygraphy"]["cmp"], conv["workbench"]["run"], conv["ort"]["run"]]
    return "\n".join(["## Exact commands (run from the repo root, in this order)", "```", *map(command, runs), "```"])


def method_section(setup, diag, conv) -> str:
    runs = [setup["convert"], diag["workbench"]["run"], diag["polygraphy"]["ref"], diag["polygraphy"]["cmp"],
            conv["workbench"]["run"], conv["ort"]["run"]]
    others = ", ".join(f"{r.others_cpu_s:.0f} CPU-s in {r.seconds:.0f} s" for r in runs)
    return "\n".join([
        "## How it was measured",
        "- Each command is its own subprocess, run one after the other, never two at once.",
        "- Wall time: `time.perf_counter()` from start to reaping the child. Polygraphy's time is the sum of its two runs.",
        "- Peak RSS: `ru_maxrss` of the `os.wait4()` rusage of that child. Linux reports the larger of the child's own peak "
        "and the peaks of its reaped descendants, i.e. the largest single process of the tree (each tool here is one process). "
        "Polygraphy's peak is the larger of its two runs.",
        "- Conversion (c): `bench/conversion.py` loads the FP32 model with `onnx.load` (untimed), then times only the converter "
        "call on a fresh in-memory copy each repetition; its peak RSS is read in-process right after converting, before the "
        "onnxruntime check. It includes the loaded model and the copy, the same for both.",
        "- Polygraphy marks every tensor with `--onnx-outputs '*'`, the form its 0.53.6 `--help` documents; the older "
        "`--onnx-outputs mark all` still works there but prints a deprecation warning (removal planned for 0.55).",
        "- Tolerances: Polygraphy `--atol 1e-2 --rtol 1e-2` (element-wise); workbench default `--tolerance 1e-2` (relative L2 per tensor).",
        "- Other load on the 2 cores: CPU time used by processes other than the "
        "measured one while it ran (all busy CPU time from /proc/stat minus the child's user+system time), for convert, "
        f"diagnose, Polygraphy ref, Polygraphy compare, conversion workbench, conversion ORT: {others}. "
        "Near 0 means the command had the machine to itself; up to 2 CPU-s per second of wall time means full competition.",
    ])


# ------------------------------------------------------------------ d. automatic fix (bench/autofix.py, issue 3)

AUTOFIX_TOOLS = {
    "workbench": "workbench `auto_fix`",
    "acmp": "`auto_convert_mixed_precision` as shipped",
    "acmp-loadfail": "`auto_convert_mixed_precision`, load failure = failed attempt",
    "acmp-faithful": "`auto_convert_mixed_precision`, load failure = failed attempt, faithful FP16 runs",
}
AUTOFIX_BASELINES = {"acmp-loadfail": "blind search, judged by ORT", "acmp-faithful": "blind search, judged faithfully"}


def autofix_section(fix: dict) -> str:
    """The auto-fix comparison: one row per case and tool, then ratios against the blind search."""
    rows, ratios = [], []
    for case, entry in fix["cases"].items():
        for tool, out in entry["tools"].items():
            rows.append([f"`{case}`", AUTOFIX_TOOLS.get(tool, tool), *_autofix_cells(out)])
        for baseline, label in AUTOFIX_BASELINES.items():
            if baseline in entry["tools"]:
                ratios.append(_autofix_ratio(case, label, entry["tools"].get("workbench", {}), entry["tools"][baseline]))
    header = ["case", "tool", "validated", "inference runs", "ORT sessions (+ failed loads) / `run` calls",
              "attempts", "nodes left FP32", "float weights in FP16", "time in tool", "process wall, peak RSS",
              "runtime view: ORT CPU, worst rel-L2", "faithful FP16 view (workbench)"]
    cases = ", ".join(f"`{c}` ({e['about']}, {e['model']})" for c, e in fix["cases"].items())
    return "\n".join([
        "## d. Automatic fix: `workbench.fixes.search.auto_fix` vs onnxconverter-common `auto_convert_mixed_precision`",
        f"Cases: {cases}. Each tool gets the same loaded FP32 model and feed; `keep_io_types=True`. "
        f"Validated means what each tool itself accepted: every output finite and relative L2 <= {fix['rtol']:g} "
        "against FP32 (auto_convert_mixed_precision's `validate_fn`; the workbench's own tolerance).",
        "",
        table(header, rows),
        "",
        table(["case", "baseline", "runs: baseline / workbench (target >= 5x)", "nodes left FP32: baseline - workbench "
               "(target > 0)", "baseline's model, faithful FP16 view", "targets met"], ratios),
        "",
        "- Baselines: `auto_convert_mixed_precision` with a candidate that fails to load counted as a failed "
        "attempt (as shipped it raises on the first such candidate and returns nothing), judged either by its own "
        "whole-model ORT session or, same bisection, by the workbench's faithful FP16 replay of each candidate "
        "(every node in its own ORT session, every node boundary a real FP16 tensor), the workbench's own judge. "
        "In the faithful variant a candidate that ORT cannot load as a whole (a session is built, not run) or "
        "a replay that stops at a node ORT cannot build is a failed attempt, not a run.",
        "- Inference runs: workbench, its own `runs` (model forward passes, full or partial, the FP32 reference "
        "included); auto_convert_mixed_precision, every `InferenceSession.run` (each a full forward pass: dtype probe, "
        "FP32 reference, every attempt that loaded, the final re-check). The ORT column counts every session and `run` "
        "in the tool's process (the workbench's replay runs one node per session, so it has many small runs).",
        "- Nodes left FP32: workbench, `kept_fp32`; auto_convert_mixed_precision, its final `node_block_list` plus "
        "nodes of its default op block list. Float weights in FP16: elements of float initializers and Constant "
        "tensors in the final model.",
        "- Runtime view: the final model in a plain ONNX Runtime CPU session, worst output relative L2 vs FP32 "
        "(`-` = does not load or non-finite). ORT's CPU provider computes many FP16 ops in FP32, so it can pass a model "
        "that an FP16 engine gets wrong. Faithful view: `workbench.diagnose(fp32, candidate=final)`, each node's output "
        "rounded to FP16 as an FP16 engine does.",
        "- auto_convert_mixed_precision converts with onnxconverter-common's `convert_float_to_float16`, which clamps "
        "every float constant into [-1e4, 1e4] (its `max_finite_val`, not 65504) and tiny ones to ±1e-7: the -3.4e38 "
        "mask constant becomes -1e4 without any FP32 node.",
        "" if fix.get("bert_base_included") else
        "- BERT-base (`bench/work/bert_base_fp32.onnx`) is left out by default: auto_convert_mixed_precision alone "
        "takes over 2 minutes on it here. `.venv/bin/python bench/autofix.py --bert-base` includes it.",
        "- Commands: `.venv/bin/python bench/autofix.py` (this section alone; JSON in `bench/work/autofix.json`), "
        "per case and tool `.venv/bin/python bench/autofix.py tool TOOL CASE`, cross-check "
        "`.venv/bin/python bench/autofix.py check CASE FINAL.onnx...`.",
    ])


def _autofix_cells(out: dict) -> list[str]:
    if not out.get("available", True):
        return [f"not available yet: {out.get('error', '')}"] + [""] * 9
    proc = out.get("process", {})
    ort_counts = out.get("ort") or {}
    kept = out.get("kept_fp32") or []
    error = (out.get("error") or "not validated").replace("Fail: [ONNXRuntimeError] : 1 : FAIL : ", "ORT: ")
    validated = ("yes" if out.get("ok") else f"no, raised at attempt {out.get('attempts', '?')}: {error[:110]}"
                 if out.get("error") else "no (not validated)")
    share = f"{out['fp16_share']:.1%}" if out.get("final") else "-"
    names = f" ({', '.join(f'`{n}`' for n in kept)})" if 0 < len(kept) <= 4 else ""
    check = out.get("check") or {}
    return [
        validated, str(out.get("runs", "-")),
        f"{ort_counts.get('sessions', '-')} (+{ort_counts.get('failed_sessions', '-')}) / {ort_counts.get('runs', '-')}",
        str(out.get("attempts", "-")), (f"{len(kept)}{names}" if out.get("final") else "-"), share,
        f"{out.get('seconds', 0):.1f} s", f"{proc.get('seconds', 0):.1f} s, {proc.get('peak_mib', 0):.0f} MiB",
        _runtime_cell(check.get("runtime")), _faithful_cell(check.get("faithful")),
    ]


def _runtime_cell(runtime) -> str:
    if not runtime:
        return "-"
    if not runtime.get("loads"):
        return f"does not load: {runtime.get('error', '')[:120]}"
    worst = [o["rel_l2"] for o in runtime["outputs"].values()]
    if any(w is None for w in worst):
        return f"non-finite ({sum(o['nonfinite'] for o in runtime['outputs'].values())} elements)"
    return f"{max(worst):.1e} ({'ok' if runtime['ok'] else 'beyond 1e-2'})"


def _faithful_cell(faithful) -> str:
    if not faithful:
        return "-"
    if faithful.get("verdict") is None:
        return f"error: {faithful.get('error', '')[:120]}"
    worst = [o["rel_l2"] for o in faithful["outputs"].values()]
    shown = f", {max(worst):.1e}" if all(w is not None and math.isfinite(w) for w in worst) else ""
    roots = faithful.get("roots") or []
    return f"`{faithful['verdict']}`{shown}" + (f"; root {', '.join(f'`{r}`' for r in roots[:3])}" if roots else "")


def _autofix_ratio(case: str, label: str, ours: dict, blind: dict) -> list[str]:
    faithful = _faithful_cell((blind.get("check") or {}).get("faithful"))
    if not ours or not ours.get("available", True):
        return [f"`{case}`", label, "workbench not available yet", "", faithful, ""]
    if not (ours.get("ok") and blind.get("ok")):
        return [f"`{case}`", label, "-", "-", faithful, f"not comparable: workbench {'ok' if ours.get('ok') else 'failed'}, "
                f"baseline {'ok' if blind.get('ok') else 'failed'}"]
    ratio = blind["runs"] / max(ours["runs"], 1)
    diff = len(blind.get("kept_fp32") or []) - len(ours.get("kept_fp32") or [])
    met = [f"runs {'yes' if ratio >= 5 else 'no'}", f"FP32 nodes {'yes' if diff > 0 else 'no (equal)' if diff == 0 else 'no'}"]
    return [f"`{case}`", label, f"{blind['runs']} / {ours['runs']} = {ratio:.1f}x", f"{diff:+d}", faithful, ", ".join(met)]
