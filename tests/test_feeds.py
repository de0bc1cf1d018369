import numpy as np
import onnx
import pytest
from inline_models import parse_model

from workbench.errors import WorkbenchError
from workbench.io.feeds import check_feed, embedding_rows, generate_feed, load_feed
from workbench.io.model import load_model
from workbench.ir.graph import GraphIndex

EMBED = """
g (int64[batch, sequence] input_ids, int64[batch, sequence] attention_mask) => (float[batch, sequence, 4] y) {
    e = Gather(table, input_ids)
    m = Cast <to = 1> (attention_mask)
    mu = Unsqueeze(m, axis)
    y = Mul(e, mu)
}
"""


def embed_index():
    model = load_model(
        parse_model(EMBED, table=np.zeros((37, 4), np.float32), axis=np.array([-1], np.int64))
    )
    return GraphIndex(model.graph, list(model.proto.opset_import))


def test_generated_token_ids_stay_inside_the_embedding_table():
    feed = generate_feed(embed_index(), batch=3, sequence=8)
    assert feed["input_ids"].shape == (3, 8) and feed["input_ids"].dtype == np.int64
    assert 0 <= feed["input_ids"].min() and feed["input_ids"].max() < 37
    assert embedding_rows(embed_index(), "input_ids") == 37


def test_generated_mask_is_ones_with_some_padding_and_no_empty_row():
    mask = generate_feed(embed_index(), batch=3, sequence=8)["attention_mask"]
    assert mask[0].all() and not mask[1:].all()
    assert mask.sum(axis=1).min() >= 4


def test_generation_is_reproducible():
    first, second = generate_feed(embed_index()), generate_feed(embed_index())
    assert all(np.array_equal(first[k], second[k]) for k in first)


def test_integer_input_without_embedding_cannot_be_generated():
    index = GraphIndex(load_model(parse_model("g (int64[N] k) => (int64[N] y) { y = Neg(k) }")).graph, [])
    with pytest.raises(WorkbenchError, match="cannot generate integer input 'k'.*--inputs"):
        generate_feed(index)


@pytest.mark.parametrize(
    "feed, message",
    [
        ({"input_ids": np.zeros((2, 8), np.int64)}, "missing 'attention_mask'"),
        ({"input_ids": np.zeros((2, 8), np.int64), "attention_mask": np.ones((2, 8), np.int64), "x": np.ones(1)}, "unknown 'x'"),
        ({"input_ids": np.zeros((2, 8), np.float32), "attention_mask": np.ones((2, 8), np.int64)}, "'input_ids' must be int64"),
        ({"input_ids": np.zeros((2, 8, 1), np.int64), "attention_mask": np.ones((2, 8), np.int64)}, "must have 2 dimensions"),
        ({"input_ids": np.zeros((2, 8), np.int64), "attention_mask": np.ones((2, 9), np.int64)}, "disagree on 'sequence'"),
    ],
)
def test_feed_that_does_not_fit_names_the_problem(feed, message):
    with pytest.raises(WorkbenchError, match=message):
        check_feed(embed_index(), feed, "model")


def test_nan_in_a_float_feed_is_refused():
    index = GraphIndex(load_model(parse_model("g (float[N] x) => (float[N] y) { y = Neg(x) }")).graph, [])
    with pytest.raises(WorkbenchError, match="holds NaN or inf"):
        check_feed(index, {"x": np.array([1.0, np.nan], np.float32)}, "model")


def test_float_feed_is_cast_to_the_input_type():
    index = GraphIndex(load_model(parse_model("g (float[N] x) => (float[N] y) { y = Neg(x) }")).graph, [])
    assert check_feed(index, {"x": np.array([1.0, 2.0])}, "model")["x"].dtype == np.float32


def test_npz_round_trip_and_bad_file(tmp_path):
    np.savez(tmp_path / "feed.npz", x=np.arange(3))
    assert np.array_equal(load_feed(tmp_path / "feed.npz")["x"], np.arange(3))
    (tmp_path / "bad.npz").write_text("not a zip")
    with pytest.raises(WorkbenchError, match="not a readable .npz"):
        load_feed(tmp_path / "bad.npz")
    with pytest.raises(WorkbenchError, match="no such inputs file"):
        load_feed(tmp_path / "missing.npz")


def test_an_input_without_type_takes_the_feed_as_it_is_and_a_sequence_input_is_refused():
    from onnx import TensorProto, helper

    proto = parse_model("g (float[4] x) => (float[4] y) { y = Relu(x) }")
    proto.graph.input[0].CopyFrom(helper.make_empty_tensor_value_info("x"))
    index = GraphIndex.of(load_model(proto))
    assert check_feed(index, {"x": np.ones(3, np.float32)}, "m")["x"].shape == (3,)
    with pytest.raises(WorkbenchError, match="NaN or inf"):
        check_feed(index, {"x": np.full(3, np.nan, np.float32)}, "m")
    proto.graph.input[0].CopyFrom(helper.make_tensor_sequence_value_info("x", TensorProto.FLOAT, None))
    with pytest.raises(WorkbenchError, match="is a sequence, map or optional"):
        check_feed(GraphIndex.of(load_model(proto)), {"x": np.ones(3, np.float32)}, "m")


def test_minus_one_and_zero_dims_are_dynamic():
    """paddle2onnx writes dynamic axes as -1: `[-1, 3, ?, ?]` must accept any batch size."""
    model = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Relu", ["x"], ["y"])],
            "g",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [-1, 3, None, None])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        )
    )
    index = GraphIndex.of(load_model(model))
    feed = check_feed(index, {"x": np.zeros((1, 3, 48, 192), np.float32)}, "m")
    assert feed["x"].shape == (1, 3, 48, 192)
    with pytest.raises(WorkbenchError, match="size 3 on axis 1"):
        check_feed(index, {"x": np.zeros((1, 4, 48, 192), np.float32)}, "m")


# ---------------------------------------------------------------- images

import onnxruntime as ort  # noqa: E402

from workbench.io import feeds  # noqa: E402
from workbench.io.feeds import describe_generated, image_layout  # noqa: E402

IMAGENET_255 = dict(mean=np.array([123.7, 116.3, 103.5], np.float32).reshape(1, 3, 1, 1),
                    std=np.array([58.4, 57.1, 57.4], np.float32).reshape(1, 3, 1, 1))
IMAGENET_01 = dict(mean=np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1),
                   std=np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1))


def _cnn(input_type="float[N, 3, H, W]", normalise=True, channels=3, **constants):
    """A stride-32 CNN: a 32×32 kernel, so an input smaller than 32 cannot run at all."""
    body = "a = Sub(x, mean)\n b = Div(a, std)\n y = Conv <strides = [32, 32]> (b, w)" if normalise else \
        "y = Conv <strides = [32, 32]> (x, w)"
    model = parse_model(f"g ({input_type} x) => (float[N, 4, h, w] y) {{ {body} }}",
                        w=np.full((4, channels, 32, 32), 1e-3, np.float32), **constants)
    return model, GraphIndex.of(load_model(model))


def test_an_image_input_gets_a_picture_big_enough_for_a_stride_32_cnn():
    model, index = _cnn(**IMAGENET_255)
    feed = generate_feed(index)
    assert feed["x"].shape == (2, 3, 64, 256) and feed["x"].dtype == np.float32
    (y,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)
    assert y.shape == (2, 4, 2, 8)


def test_the_picture_is_structured_deterministic_and_differs_per_row():
    _, index = _cnn(**IMAGENET_255)
    first, second = generate_feed(index)["x"], generate_feed(index)["x"]
    assert np.array_equal(first, second) and not np.array_equal(first[0], first[1])
    assert 0 <= first.min() and first.max() <= 255 and first.max() > 200  # the model's Sub/Div expect 0..255
    edges = np.abs(np.diff(first[0], axis=2))
    assert (edges > 50).mean() > 0.002 and (edges < 1).mean() > 0.5  # flat regions with sharp edges, not noise


@pytest.mark.parametrize("constants, normalise, scale", [
    (IMAGENET_255, True, "0..255"), (IMAGENET_01, True, "0..1"), ({}, False, "normalised")])
def test_the_value_scale_follows_the_models_own_normalisation(constants, normalise, scale):
    _, index = _cnn(normalise=normalise, **constants)
    layout = image_layout(index, index.graph.input[0])
    assert layout.scale == scale
    x = generate_feed(index)["x"]
    if scale == "0..1":
        assert 0 <= x.min() and x.max() <= 1
    if scale == "normalised":
        assert x.min() < -1 and abs(float(x.mean())) < 1.5


def test_fixed_dims_are_kept_and_channels_come_from_the_conv_weight():
    _, index = _cnn("float[1, C, 48, 320]", normalise=False, channels=1)
    layout = image_layout(index, index.graph.input[0])
    assert layout.shape == (1, 1, 48, 320) and layout.picture
    assert generate_feed(index)["x"].shape == (1, 1, 48, 320)


def test_a_float_input_that_reaches_no_conv_is_not_an_image():
    index = GraphIndex.of(load_model(parse_model("g (float[N, 3, H, W] x) => (float[N, 3, H, W] y) { y = Relu(x) }")))
    assert image_layout(index, index.graph.input[0]) is None


def test_the_report_says_what_kind_of_feed_was_generated():
    _, index = _cnn(**IMAGENET_255)
    assert describe_generated(index) == ("'x': generated: structured 3×64×256 image with text (values 0..255, "
                                         "the model normalises itself); pass --inputs for real ones")
    assert "'input_ids': generated token ids" in describe_generated(embed_index())


def test_without_pillow_the_picture_is_drawn_rectangles(monkeypatch):
    monkeypatch.setattr(feeds, "_pillow", lambda: None)  # Pillow is optional: as if it were not installed
    _, index = _cnn(**IMAGENET_255)
    x = generate_feed(index)["x"]
    assert x.shape == (2, 3, 64, 256) and x.max() > 100 and x.min() == 0  # dark bars where text would be
    assert "image of drawn rectangles (Pillow not installed)" in describe_generated(index)


def test_a_diagnosis_without_inputs_runs_a_cnn_and_says_what_it_generated():
    import workbench

    model, _ = _cnn(**IMAGENET_255)
    report = workbench.diagnose(model)
    assert report.feed["x"].shape == (2, 3, 64, 256)
    assert "inputs 'x': generated: structured 3×64×256 image with text" in report.summary()
    assert workbench.diagnose(model, inputs=report.feed).feed_origin is None  # given inputs: nothing to say


def _image_index(dims):
    """An input 'x' with these dims (int: dim_value, str: dim_param, None: neither set) and output x + 1."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 1, 1])
    for dim, value in zip(x.type.tensor_type.shape.dim, dims):
        dim.Clear()
        if isinstance(value, int):
            dim.dim_value = value
        elif isinstance(value, str):
            dim.dim_param = value
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    graph = helper.make_graph([helper.make_node("Add", ["x", "one"], ["y"])], "g", [x], [y], [one])
    model = load_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    return GraphIndex(model.graph, list(model.proto.opset_import))


@pytest.mark.parametrize("dims", [[-1, 3, "?", "?"], [-1, 3, "", ""], [None, 3, None, None], ["?", 3, "", None]])
def test_unnamed_dynamic_dims_are_each_their_own(dims):
    # paddle2onnx's [-1, 3, ?, ?]: height and width are independent, a 48x192 image fits
    image = np.zeros((1, 3, 48, 192), np.float32)
    assert check_feed(_image_index(dims), {"x": image}, "model")["x"].shape == (1, 3, 48, 192)


def test_a_real_dim_name_used_twice_must_agree():
    with pytest.raises(WorkbenchError, match="disagree on 'side'"):
        check_feed(_image_index([-1, 3, "side", "side"]), {"x": np.zeros((1, 3, 48, 192), np.float32)}, "model")
