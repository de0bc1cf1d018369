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


def render(info, setup, diag, conv) -> str:
    parts = [
        "# Benchmark: workbench on BERT-base (legacy attention mask, FP16)",
        "Written by `bench/run.py`; every figure below is from its last run. Re-run with `make bench`.",
        machine_section(info, setup),
        diagnosis_section(diag, setup["graph"]),
        conversion_section(conv),
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
