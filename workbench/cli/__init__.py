"""The command line: a thin layer over the Python API. Errors are one line on stderr, never a traceback."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from workbench.cli import variants as variant_cli
from workbench.errors import WorkbenchError
from workbench.fixes.search import RUN_BUDGET
from workbench.formats import PRECISIONS
from workbench.variants import export_check, speed

PRECISION_NAMES = list(PRECISIONS)

# `workbench fix`: 0 verified; 1 not verified and the run budget spent (a larger --budget may find a fix);
# 4 not verified with budget left (the search had no move left, or --no-auto fixes that do not verify).
# Every command: 2 a user error (one line on stderr), 3 an internal error.
EXIT_BUDGET_SPENT, EXIT_USER_ERROR, EXIT_INTERNAL_ERROR, EXIT_NO_FIX_FOUND = 1, 2, 3, 4


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse prints usage + error; we want one line
        raise WorkbenchError(f"{message} (see `workbench {self.prog.split()[-1]} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="workbench", description="Find out why a converted ONNX model gives wrong numbers.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    diag = commands.add_parser("diagnose", help="find the root cause of FP16 NaN or divergence")
    diag.add_argument("model", help="the reference (FP32) .onnx model")
    source = diag.add_mutually_exclusive_group()
    source.add_argument("--candidate", help="the variant to diagnose (default: the workbench's own FP16 conversion)")
    source.add_argument("--precision", choices=PRECISION_NAMES, default="fp16", help="make the candidate by converting to this format")
    diag.add_argument("--inputs", help=".npz keyed by input name (default: generated inputs)")
    diag.add_argument("--mode", choices=["faithful", "runtime"], default="faithful",
                      help="faithful: compute as a low-precision engine does (default); runtime: run as ONNX Runtime does")
    _add_run_options(diag)
    _add_conversion_options(diag)
    diag.add_argument("--json", action="store_true", help="print the diagnosis as JSON")

    fix = commands.add_parser(
        "fix", help="fix the FP16 variant until its outputs match, and write it",
        description="Fix the FP16 variant until its outputs match, and write it. Exit 0: verified; 1: not verified, "
                    "the run budget spent (try a larger --budget); 4: not verified with budget left (no fix left to try, "
                    "or the --no-auto fixes do not verify); 2: an error (one line on stderr).")
    fix.add_argument("model", help="the reference (FP32) .onnx model")
    fix.add_argument("--precision", choices=PRECISION_NAMES, default="fp16", help="the format to convert to")
    fix.add_argument("-o", "--output", required=True, help="where to write the fixed FP16 model")
    fix.add_argument("--inputs", help=".npz keyed by input name (default: generated inputs)")
    fix.add_argument("--mode", choices=["faithful", "runtime"], default="faithful", help="how the variant is verified (default faithful)")
    _add_run_options(fix)
    _add_conversion_options(fix)
    fix.add_argument("--fix", action="append", default=[], metavar="NAME=TARGET",
                     help="apply this fix first (repeatable), e.g. mask-constant=val_32, keep-fp32=ln_pow,ln_var")
    fix.add_argument("--no-auto", action="store_true", help="apply only the fixes given, do not search for more")
    fix.add_argument("--budget", type=_positive_int, default=RUN_BUDGET, metavar="N",
                     help=f"model runs the automatic fix may spend, the first diagnosis included (default {RUN_BUDGET})")
    fix.add_argument("--task", choices=["embedding", "masked-lm"],
                     help="also check the task: sentence-embedding cosine and ranking, or masked-LM top-5 tokens")
    fix.add_argument("--task-output", help="the model output the task check reads (default: the first output)")
    fix.add_argument("--json", action="store_true", help="print the result as JSON")

    conv = commands.add_parser("convert", help="write the FP16 conversion of a model")
    conv.add_argument("model")
    conv.add_argument("-o", "--output", required=True, help="where to write the converted model")
    conv.add_argument("--precision", choices=PRECISION_NAMES, default="fp16", help="the format to convert to (default fp16)")
    _add_conversion_options(conv)

    nodes = commands.add_parser("nodes", help="list the model's nodes with the names the workbench uses")
    nodes.add_argument("model")
    _COMMANDS.update(variant_cli.add_cli(commands))  # optimize, quantize
    _COMMANDS.update(export_check.add_cli(commands))  # export, export-check
    _COMMANDS.update(speed.add_cli(commands))  # speed
    _add_sweep_parser(commands)
    return parser


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of model runs, at least 1, got '{text}'")
    return int(text)


def _add_sweep_parser(commands) -> None:
    """`workbench sweep` (workbench/sweep/cli.py)."""
    from workbench.cli import sweep as sweep_cli

    sweep_cli.add_parser(commands)
    _COMMANDS["sweep"] = _run_sweep


def _run_sweep(args) -> int:
    from workbench.cli import sweep as sweep_cli

    return sweep_cli.run(args)


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=["emulate", "ort-kernels"], default="emulate",
                        help="emulate: FP32 arithmetic, every low-precision tensor rounded where stored, one session (default); "
                             "ort-kernels: ONNX Runtime's FP16 kernels, node by node")
    parser.add_argument("--provider", choices=["cpu", "cuda"], default="cpu", help="execution provider for the candidate")
    parser.add_argument("--tolerance", type=float,
                        help="relative L2 error allowed per tensor (default: 1e-2 for FP16, 4e-2 BF16, 0.15 FP8 E4M3, 0.25 E5M2)")
    parser.add_argument("--memory-budget", type=float, metavar="MIB",
                        help="keep at most this many MiB of the candidate's tensors; the rest are compared as computed, then dropped")


def _add_conversion_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clamp-constants", action="store_true", help="clamp constants beyond ±65504 instead of letting them become ±inf")
    parser.add_argument("--keep-node", action="append", default=[], metavar="NAME", help="keep this node in FP32 (repeatable)")
    parser.add_argument("--keep-op-type", action="append", default=[], metavar="OP", help="keep every node of this op type in FP32 (repeatable)")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(name)s: %(message)s")
    try:
        args = build_parser().parse_args(argv)
        return _COMMANDS[args.command](args)
    except WorkbenchError as exc:
        if debug:
            raise
        print(f"workbench: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:  # `workbench ... | head`: the reader left, nothing to report
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("workbench: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug of ours: still one line, with the way to see more
        if debug:
            raise
        message = " ".join(str(exc).split())[:300]
        print(f"workbench: internal error: {type(exc).__name__}: {message} (rerun with --debug for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL_ERROR


def _fp16_options(args):
    from workbench.convert.low_precision import Fp16Options

    return Fp16Options(
        clamp_constants=args.clamp_constants,
        keep_nodes=frozenset(args.keep_node),
        keep_op_types=frozenset(args.keep_op_type),
        precision=getattr(args, "precision", None) or "fp16",
    )


def _providers(name: str) -> tuple[str, ...]:
    if name == "cpu":
        return ("CPUExecutionProvider",)
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        raise WorkbenchError("CUDA is not available to this onnxruntime; install onnxruntime-gpu on a machine with a GPU, or use --provider cpu.")
    return ("CUDAExecutionProvider", "CPUExecutionProvider")


def _diagnose_options(args):
    from workbench.compare.diff import Tolerance
    from workbench.diagnosis.search import DiagnoseOptions

    return DiagnoseOptions(
        mode=args.mode,
        engine=args.engine,
        tolerance=Tolerance() if args.tolerance is None else Tolerance(rel_l2=args.tolerance),
        fp16=_fp16_options(args),
        providers=_providers(args.provider),
        progress=not args.json and sys.stderr.isatty(),
        memory_budget_mb=args.memory_budget,
    )


def _diagnose(args) -> int:
    from workbench.diagnosis.search import diagnose

    report = diagnose(args.model, args.candidate, inputs=args.inputs, options=_diagnose_options(args))
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return 0


def _fix(args) -> int:
    from workbench.diagnosis.search import diagnose
    from workbench.fixes.catalogue import parse_fix
    from workbench.fixes.search import auto_fix
    from workbench.fixes.verify import apply_fixes
    from workbench.io.model import load_model
    from workbench.io.save import check_output
    from workbench.ir.graph import GraphIndex

    source, target = Path(args.model), Path(args.output)
    model = load_model(source)
    protected = [*model.source_files, *([Path(args.inputs)] if args.inputs else [])]
    check_output([target], protected)  # before the diagnosis: a refused -o costs nothing
    requested = tuple(parse_fix(spec) for spec in args.fix)
    index = GraphIndex.of(model)
    for fix in requested:  # a bad request fails now, not after a diagnosis
        fix.check(index)
    options = _diagnose_options(args)
    before = diagnose(model, inputs=args.inputs, options=options)
    if args.no_auto:
        result = apply_fixes(before, requested).with_second_engine()
    else:
        result = auto_fix(before, fixes=requested, progress=options.progress, budget=args.budget)
    if args.task:
        result = result.check_task(_task(args, result.after))
    result.save(target, protect=protected)
    if args.json:
        print(json.dumps({**result.to_dict(), "output_path": str(target)}, indent=2))
    else:
        print(result.summary())
        print(f"wrote {target}" + ("" if result.ok else " (still failing verification: see above)"))
    return _fix_exit_code(result)


def _fix_exit_code(result) -> int:
    if result.ok:
        return 0
    return EXIT_BUDGET_SPENT if result.budget_spent else EXIT_NO_FIX_FOUND


def _task(args, diagnosis):
    from workbench.task import checks as task

    output = args.task_output or diagnosis.reference.graph.output[0].name
    if args.task == "embedding":
        return task.SentenceEmbeddingTask(output=output)
    return task.MaskedLmTask(output=output)


def _convert(args) -> int:
    from workbench.convert.low_precision import convert_to_fp16
    from workbench.formats import precision
    from workbench.io.model import load_model
    from workbench.io.save import check_output, save_model

    target = Path(args.output)
    model = load_model(args.model)
    check_output([target], model.source_files)  # before converting: a refused -o costs nothing
    converted, stats = convert_to_fp16(model, _fp16_options(args))
    save_model(converted, target)  # the converted model reads the source's files: protected too
    print(
        f"wrote {target}: {stats.converted_initializers} initializers to {precision(args.precision).label}, {stats.casts_inserted} Casts inserted, "
        f"{len(stats.kept_fp32)} nodes kept FP32, {len(stats.clamped)} constants clamped, in {stats.seconds:.2f} s"
    )
    return 0


def _nodes(args) -> int:
    from workbench.io.model import load_model
    from workbench.ir.graph import GraphIndex

    model = load_model(args.model)
    for node in GraphIndex.of(model).nodes:
        print(f"{node.name}\t{node.op_type}\t{', '.join(node.input)} -> {', '.join(node.output)}")
    return 0


_COMMANDS = {"diagnose": _diagnose, "fix": _fix, "convert": _convert, "nodes": _nodes}
