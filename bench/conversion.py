"""One FP16 converter timed in-process on an already-loaded FP32 ModelProto; prints JSON.

    python bench/conversion.py {workbench|ort} FP32.onnx FEED.npz

Loading is not timed. Each repetition converts a fresh copy made before the timer starts
(onnxruntime's converter edits its argument in place). `peak_rss_mib` is this process's
peak just after converting, before the result is checked in onnxruntime. The check: an
InferenceSession built from the result runs the feed, compared with the FP32 model's output.
"""

from __future__ import annotations

import json
import resource
import sys
import time

import numpy as np
import onnx
import onnx.numpy_helper

REPEATS = 3
SLOW_S = 30.0  # a converter slower than this runs once


def _workbench(proto: onnx.ModelProto):
    from workbench import convert_to_fp16, load_model

    def run():
        # A fresh copy each time, not timed: a Model keeps the weights it has decoded, and a
        # second conversion of the same Model would skip that part of the work.
        model = load_model(proto)
        start = time.perf_counter()
        converted, _stats = convert_to_fp16(model)
        return time.perf_counter() - start, converted.proto
    return run


def _ort(proto: onnx.ModelProto):
    from onnxruntime.transformers.float16 import convert_float_to_float16

    def run():
        copy = onnx.ModelProto()
        copy.CopyFrom(proto)
        start = time.perf_counter()
        converted = convert_float_to_float16(copy, keep_io_types=True)
        return time.perf_counter() - start, converted
    return run


def timed(run) -> tuple[list[float], onnx.ModelProto]:
    times, result = [], None
    for _ in range(REPEATS):
        result = None  # free the previous result before the next conversion
        seconds, result = run()
        times.append(seconds)
        if seconds > SLOW_S:
            break
    return times, result


def check(converted: onnx.ModelProto, fp32_path: str, feed: dict) -> dict:
    """Does the result load and run in onnxruntime, and how far is its output from FP32's?"""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(converted.SerializeToString(), providers=["CPUExecutionProvider"])
        got = session.run(None, feed)[0].astype(np.float64)
    except Exception as exc:  # the answer we report, not a crash of the benchmark
        return {"loads_in_ort": False, "error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}
    want = ort.InferenceSession(fp32_path, providers=["CPUExecutionProvider"]).run(None, feed)[0].astype(np.float64)
    finite = np.isfinite(got)
    rel_l2 = float(np.linalg.norm(got - want) / np.linalg.norm(want)) if finite.all() else None
    return {"loads_in_ort": True, "nonfinite_outputs": int((~finite).sum()), "output_elements": int(got.size),
            "rel_l2_vs_fp32": rel_l2}


def _mask_constant(model: onnx.ModelProto) -> list[float]:
    """The scalar constants `mask_scale` multiplies by, as the converted model holds them."""
    tensors = {t.name: t for t in model.graph.initializer}
    tensors.update({n.output[0]: n.attribute[0].t for n in model.graph.node
                    if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    node = next((n for n in model.graph.node if n.name == "mask_scale"), None)
    if node is None:
        return []
    values = [onnx.numpy_helper.to_array(tensors[i]) for i in node.input if i in tensors]
    return [float(v.item()) for v in values if v.size == 1]


def _casts(model: onnx.ModelProto) -> int:
    return sum(n.op_type == "Cast" for n in model.graph.node)


def main(tool: str, fp32_path: str, feed_path: str) -> None:
    proto = onnx.load(fp32_path)
    times, converted = timed({"workbench": _workbench, "ort": _ort}[tool](proto))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"tool": tool, "seconds": times, "best_s": min(times), "peak_rss_mib": peak,
              "fp16_initializers": sum(t.data_type == onnx.TensorProto.FLOAT16 for t in converted.graph.initializer),
              "casts_added": _casts(converted) - _casts(proto),
              "mask_constant": _mask_constant(converted)}
    del proto
    result.update(check(converted, fp32_path, dict(np.load(feed_path))))
    print(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:4])
