"""Tiny models, each with the FP16 fault of one kind that issue 11 found on real models, and their feeds."""

import numpy as np
from inline_models import parse_model
from onnx import TensorProto, helper, numpy_helper

from workbench.io.model import load_model

FMIN = float(np.finfo(np.float32).min)
BN_VARIANCE = 9.79e7  # the running variance of the paddle2onnx text detector's first BatchNormalization


def named(proto):
    """Nodes named after their first output."""
    for node in proto.graph.node:
        node.name = node.output[0]
    return load_model(proto)


def _constant(name: str, values) -> "helper.NodeProto":
    return helper.make_node("Constant", [], [name], name=name, value=numpy_helper.from_array(np.asarray(values, np.float32), name))


def conv_bn():
    """Conv then BatchNormalization, weights stored as Constant nodes as paddle2onnx does; channel 1's
    running variance is 9.79e7 (inf in FP16, and 65504 after clamping scales it 38x)."""
    weights = np.random.default_rng(0).normal(size=(2, 3, 3, 3)).astype(np.float32)
    weights[1] *= 2000  # channel 1's outputs have a standard deviation near sqrt(9.79e7)
    nodes = [
        _constant("w", weights), _constant("scale", [1, 1]), _constant("bias", [0, 0.5]),
        _constant("mean", [0, 100]), _constant("var", [1, BN_VARIANCE]),
        helper.make_node("Conv", ["x", "w"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["conv", "scale", "bias", "mean", "var"], ["bn"], name="bn", epsilon=1e-5),
        helper.make_node("Relu", ["bn"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(nodes, "conv_bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])])
    return load_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def conv_bn_feed():
    return {"x": np.random.default_rng(1).normal(size=(1, 3, 8, 8)).astype(np.float32)}


def softmax_log():
    """log(softmax(x)) computed in two steps: probabilities of about 1e-14 are 0 once stored in FP16."""
    return named(parse_model("""g (float[4,16] logits) => (float[4,16] y) {
        probs = Softmax(logits)
        moved = Transpose<perm=[1,0]>(probs)
        back = Transpose<perm=[1,0]>(moved)
        y = Log(back)
    }"""))


def softmax_log_feed():
    logits = np.random.default_rng(0).normal(size=(4, 16)).astype(np.float32)
    logits[:, 0] += 30
    return {"logits": logits}


def rotary():
    """Rotary-embedding angles at positions 3000-3063: FP16's spacing there is 2."""
    inv_freq = (1.0 / 10000 ** (np.arange(8) / 8)).astype(np.float32).reshape(1, 8)
    return named(parse_model("""g (int64[64,1] pos, float[64,8] x1, float[64,8] x2) => (float[64,8] y) {
        pos_f = Cast<to=1>(pos)
        angles = Mul(pos_f, inv_freq)
        cos = Cos(angles)
        sin = Sin(angles)
        a = Mul(x1, cos)
        b = Mul(x2, sin)
        y = Add(a, b)
    }""", inv_freq=inv_freq))


def rotary_feed():
    rng = np.random.default_rng(0)
    return {
        "pos": np.arange(3000, 3064, dtype=np.int64).reshape(64, 1),
        "x1": rng.normal(size=(64, 8)).astype(np.float32),
        "x2": rng.normal(size=(64, 8)).astype(np.float32),
    }


def masked_then_exp():
    """A masked Softmax whose float32.min becomes a harmless -inf, and an Exp of scores near 64 that
    overflows: keeping the Exp in FP32 is not enough, the scores are rounded (spacing 1/16) where stored."""
    weights = (np.random.default_rng(0).normal(size=(16, 16)) * 0.3).astype(np.float32)
    weights[0, :] = 64
    mask = np.zeros((1, 16), np.float32)
    mask[0, 12:] = FMIN
    return named(parse_model("""g (float[4,16] x) => (float[4,16] y, float[4,16] p) {
        scores = MatMul(x, w)
        masked = Add(scores, mask)
        p = Softmax(masked)
        e = Exp(scores)
        total = ReduceSum<keepdims=1>(e, axes)
        y = Div(e, total)
    }""", w=weights, mask=mask, axes=np.array([1], np.int64)))


def masked_then_exp_feed():
    x = np.random.default_rng(1).normal(size=(4, 16)).astype(np.float32)
    x[:, 0] = 1
    return {"x": x}
