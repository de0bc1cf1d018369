import numpy as np

from workbench.ui.stats import NodeCatalog, constant_text, tensor_stats, worst_elements


def test_tensor_stats_count_nonfinite_and_summarise_the_rest():
    stats = tensor_stats(np.array([1.0, -3.0, np.nan, np.inf, -np.inf, -np.inf], dtype=np.float16))
    assert (stats.nan, stats.posinf, stats.neginf, stats.nonfinite) == (1, 1, 2, 4)
    assert (stats.min, stats.max, stats.mean) == (-3.0, 1.0, -1.0)
    assert stats.dtype == "float16" and stats.shape == (6,)


def test_tensor_stats_of_an_all_nan_tensor_have_no_min():
    stats = tensor_stats(np.full((2, 2), np.nan, dtype=np.float32))
    assert stats.min is None and stats.nan == 4


def test_worst_elements_put_broken_values_first():
    reference = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    candidate = np.array([[1.5, np.nan], [3.0, 4.0]], dtype=np.float16)
    worst = worst_elements(reference, candidate)
    assert [w.index for w in worst] == [(0, 1), (0, 0)]
    assert np.isnan(worst[0].candidate)


def test_mask_scale_detail_shows_the_constant_that_fp16_cannot_hold(diagnosis_of):
    detail = NodeCatalog(diagnosis_of("legacy_mask_bert")).detail("mask_scale")
    assert detail.op_type == "Mul" and detail.finding == "root"
    constant = detail.constants[0]
    assert constant.name == "val_32"
    assert constant.reference_stats.min < -3e38 and constant.candidate_stats.neginf == 1
    output = next(t for t in detail.tensors if t.role == "output")
    assert output.candidate_stats.nan == 13 and not output.diff.ok


def test_catalog_lists_every_candidate_node_in_graph_order(diagnosis_of):
    diagnosis = diagnosis_of("clean_mlp")
    names = [name for name, _ in NodeCatalog(diagnosis).nodes()]
    assert names == [node.name for node in diagnosis.candidate.graph.node]


def test_constant_text_shortens_long_constants():
    assert constant_text(np.array([1.5], dtype=np.float32)) == "[1.5]"
    assert constant_text(np.arange(20)).endswith("… (20 values)]")
    assert constant_text(None) == "not captured"
