"""`workbench sweep`: the command line over workbench.sweep."""

from __future__ import annotations

import json
import sys


def add_parser(commands) -> None:
    sweep = commands.add_parser("sweep", help="run the variant on every input of a dataset: which inputs break, and why")
    sweep.add_argument("model", help="the reference (FP32) .onnx model")
    made = sweep.add_mutually_exclusive_group()
    made.add_argument("--candidate", help="the variant to sweep (default: the workbench's own conversion)")
    made.add_argument("--precision", choices=["fp16", "bf16", "fp8-e4m3", "fp8-e5m2"], default="fp16", help="make the candidate by converting to this format")
    sweep.add_argument("--inputs", required=True, metavar="SOURCE",
                       help="a folder of .npz feeds or images, one .npz with a leading dataset axis, or a text file of sentences")
    sweep.add_argument("--tokenizer", metavar="DIR", help="for sentences: the tokenizer's folder (default: beside the model)")
    sweep.add_argument("--batch-size", type=int, default=1, metavar="N", help="sentences or images per input (default 1)")
    sweep.add_argument("--top", type=int, default=5, metavar="N", help="diagnose the worst N failing inputs (default 5)")
    sweep.add_argument("--workers", type=int, metavar="N", help="local worker processes (default: the cores)")
    sweep.add_argument("--ray", metavar="ADDRESS", help="run as Ray tasks on this cluster; 'auto': ray.init()")
    sweep.add_argument("--work", metavar="DIR", help="where results are written as they come (default ~/.cache/workbench/sweep)")
    sweep.add_argument("--tolerance", type=float, default=1e-2, help="relative L2 error allowed per output (default 1e-2)")
    sweep.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args) -> int:
    from workbench.compare.diff import Tolerance
    from workbench.sweep import sweep

    result = sweep(
        args.model, args.candidate, inputs=args.inputs,
        precision=args.precision, top=args.top, workers=args.workers, ray=args.ray, work=args.work,
        tokenizer=args.tokenizer, batch_size=args.batch_size, tolerance=Tolerance(rel_l2=args.tolerance),
        progress=not args.json and sys.stderr.isatty(),
    )
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.summary())
    return 0
