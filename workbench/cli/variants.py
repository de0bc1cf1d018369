"""Command-line subcommands for fused and INT8 variants: `workbench optimize` and `workbench quantize`.

Registered by workbench.cli (`_COMMANDS.update(add_cli(commands))`). Nothing heavy is imported
until a command runs. Exit codes as `diagnose` and `fix`: 0 whatever the verdict; with `-o`, 1 when
the written variant fails verification; errors are one line (WorkbenchError, exit 2 from cli.main).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable

from workbench.errors import WorkbenchError

EXIT_NOT_VERIFIED = 1
_SESSION_LEVELS = ("basic", "extended", "all")  # workbench.variants.fused.SESSION_LEVELS, without importing onnxruntime


def add_cli(commands: argparse._SubParsersAction) -> dict[str, Callable[[argparse.Namespace], int]]:
    """Add `optimize` and `quantize` to a subparsers object; returns {command: handler}."""
    opt = commands.add_parser("optimize", help="fuse with ONNX Runtime's optimizers and compare with the FP32 baseline")
    opt.add_argument("model", help="the baseline (FP32) .onnx model")
    opt.add_argument("--num-heads", type=int, default=0, help="attention heads (default 0: the optimizer reads them from the graph)")
    opt.add_argument("--hidden-size", type=int, default=0, help="hidden size (default 0: read from the graph)")
    opt.add_argument("--model-type", default="bert", help="the optimizer's model type (default bert)")
    opt.add_argument("--opt-level", type=int, choices=[0, 1, 2, 99], default=0,
                     help="0: the optimizer's own fusions (default); 1, 2, 99: an ORT session optimizes first")
    opt.add_argument("--session-level", choices=_SESSION_LEVELS,
                     help="instead of the transformer optimizer: the graph an ORT CPU session runs at this level")
    opt.add_argument("--float16", action="store_true", help="then the optimizer's FP16 conversion (FP32 inputs and outputs)")
    opt.add_argument("--inputs", help=".npz keyed by input name (default: generated inputs)")
    opt.add_argument("--mode", choices=["faithful", "runtime"], default="faithful",
                     help="faithful: each node (com.microsoft ones too) in its own session (default); runtime: the variant whole")
    opt.add_argument("--tolerance", type=float, help="rel-L2 per tensor (default 1e-4 for an FP32 variant, 1e-2 for FP16)")
    opt.add_argument("-o", "--output", help="write the fused variant here")
    opt.add_argument("--json", action="store_true", help="print the comparison as JSON")

    quant = commands.add_parser("quantize", help="INT8 dynamic quantization: SQNR per tensor, the nodes that lose most, keep-FP32 fixes")
    quant.add_argument("model", help="the reference (FP32) .onnx model")
    quant.add_argument("--per-channel", action="store_true", help="one weight scale per output channel (default: per tensor)")
    quant.add_argument("--op-type", action="append", default=[], metavar="OP", help="quantize only these op types (repeatable)")
    quant.add_argument("--exclude", action="append", default=[], metavar="NODE", help="keep this node in FP32 (repeatable)")
    quant.add_argument("--auto-exclude", action="store_true", help="keep the most harmful nodes in FP32 until the outputs pass")
    quant.add_argument("--max-exclude", type=int, default=8, help="at most this many nodes for --auto-exclude (default 8)")
    quant.add_argument("--reduce-range", action="store_true", help="7-bit weights (for CPUs without VNNI)")
    quant.add_argument("--task", choices=["embedding", "masked-lm"], help="also check the task on the outputs")
    quant.add_argument("--inputs", help=".npz keyed by input name (default: generated inputs)")
    quant.add_argument("--tolerance", type=float, default=0.15, help="rel-L2 allowed per output (default 0.15, SQNR 16.5 dB)")
    quant.add_argument("--top", type=int, default=10, help="nodes listed in the ranking (default 10)")
    quant.add_argument("-o", "--output", help="write the INT8 variant here")
    quant.add_argument("--json", action="store_true", help="print the result as JSON")
    return {"optimize": run_optimize, "quantize": run_quantize}


def run_optimize(args: argparse.Namespace) -> int:
    from workbench.compare.diff import Tolerance
    from workbench.io.model import load_model
    from workbench.variants import fused as variants

    if args.session_level and (args.float16 or args.opt_level):
        raise WorkbenchError("--session-level makes the variant with an ORT session; --float16 and --opt-level belong to the transformer optimizer, not both.")
    model = load_model(args.model)
    _check_output(args, model)
    if args.session_level:
        fused = variants.session_optimized(model, args.session_level)
    else:
        fused = variants.optimize_transformer(model, num_heads=args.num_heads, hidden_size=args.hidden_size,
                                              opt_level=args.opt_level, model_type=args.model_type, float16=args.float16)
    tolerance = Tolerance(rel_l2=args.tolerance) if args.tolerance is not None else None
    comparison = variants.compare_fused(model, fused, inputs=args.inputs, mode=args.mode, tolerance=tolerance)
    written = _save(fused, args, model)
    if args.json:
        print(json.dumps({**comparison.to_dict(), "origin": fused.origin, "output_path": written}, indent=2))
    else:
        print(comparison.summary())
        if written:
            print(f"wrote {written}")
    return EXIT_NOT_VERIFIED if written and comparison.verdict != "ok" else 0


def run_quantize(args: argparse.Namespace) -> int:
    from workbench.compare.diff import Tolerance
    from workbench.io.model import load_model
    from workbench.variants import int8 as quantized

    if args.max_exclude < 1:
        raise WorkbenchError(f"--max-exclude must be at least 1, not {args.max_exclude}.")
    model = load_model(args.model)
    _check_output(args, model)
    report = quantized.analyze_int8(model, inputs=args.inputs, per_channel=args.per_channel, op_types=args.op_type or None,
                                    exclude=args.exclude, reduce_range=args.reduce_range, tolerance=Tolerance(rel_l2=args.tolerance))
    task = _task(args, report)
    if args.auto_exclude:
        result = quantized.auto_exclude(report, max_nodes=args.max_exclude, task=task)
        final, ok, payload, text = result.after, result.ok, result.to_dict(), result.summary()
        text = report.summary(args.top) + "\n" + text
    else:
        task_result = report.check_task(task) if task is not None else None
        final, ok = report, report.ok and (task_result is None or task_result.ok)
        payload = {**report.to_dict(), "task": task_result.to_dict() if task_result is not None else None}
        text = report.summary(args.top) + ("\n" + task_result.summary() if task_result is not None else "")
    payload["ranked"] = payload["ranked"][: args.top]
    written = _save(final.candidate, args, model)
    if args.json:
        payload.pop("tensors", None)
        payload["tensors"] = final.to_dict()["tensors"]
        print(json.dumps({**payload, "output_path": written}, indent=2))
    else:
        print(text)
        if written:
            print(f"wrote {written}" + ("" if ok else " (still failing verification: see above)"))
    return EXIT_NOT_VERIFIED if written and not ok else 0


def _task(args, report):
    if not args.task:
        return None
    from workbench.task import checks as task

    output = next(iter(report.outputs))
    return task.SentenceEmbeddingTask(output=output) if args.task == "embedding" else task.MaskedLmTask(output=output)


def _check_output(args, model) -> None:
    """Refuse an -o that is an input (the model, its weights, the feed) before any work is done."""
    if args.output:
        from workbench.io.save import check_output

        check_output([Path(args.output)], [*model.source_files, *_feed_path(args)])


def _feed_path(args) -> list[Path]:
    return [Path(args.inputs)] if getattr(args, "inputs", None) else []


def _save(variant, args, model) -> str | None:
    if not args.output:
        return None
    from workbench.io.save import save_model

    return str(save_model(variant, Path(args.output), protect=[*model.source_files, *_feed_path(args)]))
