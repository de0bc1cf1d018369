"""Task-level checks: sentence-embedding cosine and ranking, masked-LM top-k, on hand-made arrays and real runs."""

import json

import numpy as np
import onnxruntime as ort
import pytest

from sample_models import masked_lm as mlm
from workbench.convert.low_precision import Fp16Options, convert_to_fp16
from workbench.errors import WorkbenchError
from workbench.io.model import load_model
from workbench.task.checks import (
    MaskedLmTask,
    SentenceEmbeddingTask,
    TaskResult,
    mean_pooled_embeddings,
)

# ---------------------------------------------------------------- sentence embeddings, hand-made

# Four sentences of one token each (plus one padded slot): embeddings are these rows, normalised.
# Seen from sentence 0, sentence 1 (cos 0.894) is just ahead of sentence 2 (cos 0.887).
SENTENCES = np.array([[1.0, 0.0, 0.0, 0.0], [1.0, 0.5, 0.0, 0.0], [1.0, 0.0, 0.52, 0.0], [0.1, 0.2, 0.3, 1.0]])


def _hidden(rows=SENTENCES, padding_value=0.0):
    """[4, 2, 4]: position 0 holds the sentence, position 1 is padding (mask 0) holding `padding_value`."""
    hidden = np.stack([rows, np.full_like(rows, padding_value)], axis=1)
    return {"last_hidden_state": hidden.astype(np.float32)}


FEED = {"attention_mask": np.array([[1, 0]] * 4, np.int64)}


def test_identical_embeddings_are_ok_with_cosine_one():
    result = SentenceEmbeddingTask().check(FEED, _hidden(), _hidden())
    assert isinstance(result, TaskResult) and result.ok and result.name == "sentence embedding"
    assert result.metrics["min_cosine"] == pytest.approx(1.0, abs=1e-12)
    assert result.metrics["rankings_equal"] is True and result.metrics["sentences"] == 4
    assert "sentence 2: cosine 1.000000" in result.lines
    assert result.summary().startswith("sentence embedding: OK") and repr(result) == result.summary()
    json.dumps(result.to_dict(), allow_nan=False)


def test_float16_candidate_is_read_in_float64():
    candidate = {"last_hidden_state": _hidden()["last_hidden_state"].astype(np.float16)}
    result = SentenceEmbeddingTask().check(FEED, _hidden(), candidate)
    assert result.ok and 0.9999 < result.metrics["min_cosine"] <= 1.0 + 1e-12


def test_padding_is_left_out_of_the_mean():
    result = SentenceEmbeddingTask().check(FEED, _hidden(), _hidden(padding_value=1000.0))
    assert result.ok and result.metrics["min_cosine"] == pytest.approx(1.0, abs=1e-12)
    unmasked = SentenceEmbeddingTask(mask_input=None).check(FEED, _hidden(), _hidden(padding_value=1000.0))
    assert not unmasked.ok


def test_mean_pooling_is_the_sentence_transformers_recipe():
    hidden = np.array([[[1.0, 2.0], [3.0, 6.0], [100.0, 100.0]]])
    mask = np.array([[1, 1, 0]])
    expected = np.array([2.0, 4.0]) / np.hypot(2.0, 4.0)
    np.testing.assert_allclose(mean_pooled_embeddings(hidden, mask), [expected], rtol=1e-12)


def test_a_swapped_ranking_fails_and_names_the_sentence():
    candidate_rows = SENTENCES.copy()
    candidate_rows[1, 1] = 0.53  # sentence 1 drifts below sentence 2, as seen from sentence 0
    result = SentenceEmbeddingTask().check(FEED, _hidden(), _hidden(candidate_rows))
    assert not result.ok
    assert result.metrics["min_cosine"] > 0.999 and result.metrics["rankings_equal"] is False
    changed = [line for line in result.lines if "ranking changed" in line]
    assert len(changed) == 1 and changed[0].startswith("sentence 0: ranking changed: FP32 orders the others 1 (")
    assert "FP16 2 (" in changed[0]


def test_a_swap_of_two_sentences_tied_within_fp16_noise_is_not_a_ranking_change():
    """MiniLM on real sentences: FP32 similarities 0.1047 and 0.1045 came out swapped in FP16, cosines 0.999999."""
    reference = np.array([[1.0, 0.0, 0.0], [0.1047, 0.9945, 0.0], [0.1045, 0.0, 0.9945], [0.0117, 0.5, 0.5]])
    candidate = reference.copy()
    candidate[1, 0], candidate[2, 0] = 0.1045, 0.1048  # seen from sentence 0: 2 now before 1, by 3e-4
    tied = SentenceEmbeddingTask(mask_input=None).check({}, {"last_hidden_state": reference[:, None, :]},
                                                         {"last_hidden_state": candidate[:, None, :]})
    assert tied.ok and tied.metrics["rankings_equal"] is True, tied.summary()  # a real swap: the test above


def test_a_cosine_below_the_threshold_fails():
    candidate_rows = SENTENCES.copy()
    candidate_rows[3] = [0.1, 0.2, 0.5, 1.0]  # cosine 0.986; the ranking from every sentence stays the same
    result = SentenceEmbeddingTask().check(FEED, _hidden(), _hidden(candidate_rows))
    assert not result.ok and result.metrics["rankings_equal"] is True
    assert result.metrics["min_cosine"] == pytest.approx(0.9857281161802884, rel=1e-6)
    assert "sentence 3: cosine 0.985728 (below the threshold)" in result.lines
    assert SentenceEmbeddingTask(min_cosine=0.95).check(FEED, _hidden(), _hidden(candidate_rows)).ok


def test_nan_candidate_fails_with_a_nan_message():
    candidate = _hidden()
    candidate["last_hidden_state"][2, 0, 1] = np.nan
    result = SentenceEmbeddingTask().check(FEED, _hidden(), candidate)
    assert not result.ok and result.metrics["rankings_equal"] is False
    assert result.metrics["nonfinite_sentences"] == 1
    assert any(line.startswith("sentence 2: cosine nan") and "NaN" in line for line in result.lines)
    assert "NaN" in result.lines[0]
    assert result.to_dict()["metrics"]["min_cosine"] is None
    json.dumps(result.to_dict(), allow_nan=False)


def test_nan_at_a_padded_position_still_poisons_the_embedding():
    # sum(h * mask) as sentence-transformers computes it: NaN * 0 is NaN, so the user's pipeline sees NaN too.
    result = SentenceEmbeddingTask().check(FEED, _hidden(), _hidden(padding_value=np.nan))
    assert not result.ok and result.metrics["nonfinite_sentences"] == 4
    assert "(0 at unpadded positions)" in result.lines[1]


def test_ranking_is_skipped_below_three_sentences():
    feed = {"attention_mask": FEED["attention_mask"][:2]}
    two = {"last_hidden_state": _hidden()["last_hidden_state"][:2]}
    result = SentenceEmbeddingTask().check(feed, two, two)
    assert result.ok and result.metrics["rankings_equal"] is None
    assert "ranking not checked: it needs at least 3 sentences, got 2" in result.lines
    assert result.to_dict()["metrics"]["rankings_equal"] is None


@pytest.mark.parametrize(
    ("task", "feed", "outputs", "message"),
    [
        (SentenceEmbeddingTask(output="embeddings"), FEED, _hidden(),
         "output 'embeddings' is not in the reference outputs (they are: 'last_hidden_state')"),
        (SentenceEmbeddingTask(), {"input_ids": np.zeros((4, 2), np.int64)}, _hidden(),
         "mask input 'attention_mask' is not in the feed (it has: 'input_ids')"),
        (SentenceEmbeddingTask(), FEED, {"last_hidden_state": np.zeros((4, 4), np.float32)},
         "output 'last_hidden_state' must be a float tensor [batch, sequence, hidden], got float32 of shape [4, 4]"),
        (SentenceEmbeddingTask(), {"attention_mask": np.ones((4, 3), np.int64)}, _hidden(),
         "mask input 'attention_mask' has shape [4, 3]"),
        (MaskedLmTask(), {"attention_mask": np.ones((1, 2))}, {"logits": np.zeros((1, 2, 3, 4), np.float32)},
         "output 'logits' must be a float tensor [batch, sequence, vocab]"),
        (MaskedLmTask(k=5), {"attention_mask": np.ones((1, 2))}, {"logits": np.zeros((1, 2, 3), np.float32)},
         "k = 5 is more than the vocabulary of 'logits' (3)"),
        (MaskedLmTask(mask_token_id=4), {"input_ids": np.zeros((1, 2), np.int64)},
         {"logits": np.zeros((1, 2, 8), np.float32)}, "no position of 'input_ids' holds the mask token id 4"),
        (SentenceEmbeddingTask(), FEED, _hidden(padding_value=np.inf),
         "the reference output 'last_hidden_state' holds NaN or inf"),
    ],
)
def test_bad_requests_are_one_line_workbench_errors(task, feed, outputs, message):
    with pytest.raises(WorkbenchError) as error:
        task.check(feed, outputs, outputs)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_candidate_missing_the_output_is_named():
    with pytest.raises(WorkbenchError, match="not in the candidate outputs .they are: 'y'"):
        SentenceEmbeddingTask().check(FEED, _hidden(), {"y": _hidden()["last_hidden_state"]})


# ---------------------------------------------------------------- masked LM, hand-made

STORY_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "need", "use", "make", "have", "earn", "the", "a"]
MASK_FEED = {"input_ids": np.array([[2, 4, 10, 3, 0]]), "attention_mask": np.array([[1, 1, 1, 1, 0]])}


def _logits(favourites_by_position):
    """[1, 5, 12] logits where position t ranks favourites_by_position[t] first, in that order."""
    logits = np.zeros((1, 5, len(STORY_TOKENS)), np.float32)
    for t, favourites in enumerate(favourites_by_position):
        for rank, token in enumerate(favourites):
            logits[0, t, token] = 10.0 - rank
    return {"logits": logits}


STORY = [5, 6, 7, 8, 9]  # need use make have earn
REFERENCE = _logits([[10, 11, 0, 1, 2], STORY, [11, 10, 5, 6, 7], [3, 2, 1, 0, 4], [0, 1, 2, 3, 4]])


def test_same_topk_is_ok_and_prints_words():
    task = MaskedLmTask(mask_token_id=4, tokens=STORY_TOKENS)
    result = task.check(MASK_FEED, REFERENCE, REFERENCE)
    assert result.ok and result.name == "masked LM top-5"
    assert result.metrics == {"positions": 1, "same_topk": 1, "nonfinite_positions": 0, "mean_overlap": 1.0, "k": 5}
    assert "row 0 position 1: FP32 top-5 `need use make have earn`, FP16 top-5 `need use make have earn`" in result.lines


def test_the_source_story_fails_and_shows_both_lists():
    candidate = _logits([[10, 11, 0, 1, 2], [2, 4, 0, 1, 3], [11, 10, 5, 6, 7], [3, 2, 1, 0, 4], [0, 1, 2, 3, 4]])
    result = MaskedLmTask(mask_token_id=4, tokens=STORY_TOKENS).check(MASK_FEED, REFERENCE, candidate)
    assert not result.ok and result.metrics["same_topk"] == 0 and result.metrics["mean_overlap"] == 0.0
    assert result.lines[1].startswith(
        "row 0 position 1: FP32 top-5 `need use make have earn`, FP16 top-5 `[CLS] [MASK] [PAD] [UNK] [SEP]`; "
        "first difference at rank 1: FP32 logits of `need` and `[CLS]` differ by 10")


def test_a_reordered_topk_fails_but_overlaps_fully():
    candidate = _logits([[10, 11, 0, 1, 2], [5, 6, 8, 7, 9], [11, 10, 5, 6, 7], [3, 2, 1, 0, 4], [0, 1, 2, 3, 4]])
    result = MaskedLmTask(mask_token_id=4).check(MASK_FEED, REFERENCE, candidate)
    assert not result.ok and result.metrics["mean_overlap"] == 1.0
    assert "first difference at rank 3" in result.lines[1] and "`5 6 7 8 9`" in result.lines[1]


def test_without_a_mask_token_every_unpadded_position_is_checked():
    candidate = _logits([[10, 11, 0, 1, 2], STORY, [11, 10, 5, 6, 7], [3, 2, 1, 0, 4], [9, 8, 7, 6, 5]])
    result = MaskedLmTask().check(MASK_FEED, REFERENCE, candidate)
    assert result.ok and result.metrics["positions"] == 4  # position 4 differs, but it is padding
    everywhere = MaskedLmTask(mask_input=None).check(MASK_FEED, REFERENCE, candidate)
    assert not everywhere.ok and everywhere.metrics == {
        "positions": 5, "same_topk": 4, "nonfinite_positions": 0, "mean_overlap": 0.8, "k": 5}
    assert everywhere.lines[0] == "4 of 5 positions have the same top-5 tokens in the same order"
    assert everywhere.lines[1].startswith("row 0 position 4:")  # failures first


def test_nan_logits_fail_whatever_their_order():
    candidate = {"logits": REFERENCE["logits"].astype(np.float16)}
    candidate["logits"][0, 1, 11] = np.nan  # one NaN; sorting would still put `need use make have earn` first
    result = MaskedLmTask(mask_token_id=4, tokens=STORY_TOKENS).check(MASK_FEED, REFERENCE, candidate)
    assert not result.ok and result.metrics["nonfinite_positions"] == 1
    assert result.lines[1] == ("row 0 position 1: FP16 logits hold NaN (1 of 12), top-5 meaningless; "
                               "FP32 top-5 `need use make have earn`")
    assert result.to_dict()["metrics"]["mean_overlap"] is None


def test_token_ids_past_the_token_list_print_as_ids():
    result = MaskedLmTask(mask_token_id=4, tokens=STORY_TOKENS[:7]).check(MASK_FEED, REFERENCE, REFERENCE)
    assert "`need use #7 #8 #9`" in result.lines[1]


# ---------------------------------------------------------------- real runs with ONNX Runtime


def _run(model, feed):
    session = ort.InferenceSession(model.to_proto().SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))


@pytest.fixture(scope="module")
def masked_lm_runs(sample):
    path, feed = sample("masked_lm_bert")
    model = load_model(path)
    runs = {"fp32": _run(model, feed)}
    for name, options in (("fp16", Fp16Options()), ("fp16 clamped", Fp16Options(clamp_constants=True))):
        runs[name] = _run(convert_to_fp16(model, options)[0], feed)
    return feed, runs


@pytest.mark.parametrize("mask_token_id", [mlm.MASK_ID, None])
def test_masked_lm_sample_fp32_against_itself_is_ok(masked_lm_runs, mask_token_id):
    feed, runs = masked_lm_runs
    result = MaskedLmTask(mask_token_id=mask_token_id, tokens=mlm.TOKENS).check(feed, runs["fp32"], runs["fp32"])
    assert result.ok and result.metrics["positions"] == (3 if mask_token_id is not None else 14)


def test_masked_lm_sample_plain_fp16_gives_nan_logits(masked_lm_runs):
    feed, runs = masked_lm_runs
    result = MaskedLmTask(mask_token_id=mlm.MASK_ID, tokens=mlm.TOKENS).check(feed, runs["fp32"], runs["fp16"])
    assert not result.ok and result.metrics["nonfinite_positions"] == 3 and result.metrics["same_topk"] == 0
    assert all("FP16 logits hold NaN (100 of 100)" in line for line in result.lines[1:])


@pytest.mark.parametrize("mask_token_id", [mlm.MASK_ID, None])
def test_masked_lm_sample_clamped_fp16_keeps_the_topk(masked_lm_runs, mask_token_id):
    feed, runs = masked_lm_runs
    assert runs["fp16 clamped"]["logits"].dtype == np.float32  # outputs stay FP32 behind a Cast
    result = MaskedLmTask(mask_token_id=mask_token_id).check(feed, runs["fp32"], runs["fp16 clamped"])
    assert result.ok, result.summary()


def test_masked_lm_sample_is_reproducible_and_committed(sample):
    path, feed = sample("masked_lm_bert")
    model, built_feed = mlm.masked_lm()
    assert path.read_bytes() == model.SerializeToString(), "run: python sample_models/masked_lm.py"
    assert {k: v.tolist() for k, v in feed.items()} == {k: v.tolist() for k, v in built_feed.items()}
    assert [n.name for n in model.graph.node].count("mask_scale") == 1


@pytest.mark.slow
def test_minilm_sentence_embeddings_fp32_and_fp16():
    from sample_models import build

    feed = build.minilm_feed()
    model = load_model(build.export_minilm("modern"))
    reference = _run(model, feed)
    assert SentenceEmbeddingTask().check(feed, reference, reference).ok
    result = SentenceEmbeddingTask().check(feed, reference, _run(convert_to_fp16(model)[0], feed))
    assert result.ok and result.metrics["sentences"] == 4 and result.metrics["rankings_equal"] is True, result.summary()
    assert result.metrics["min_cosine"] > 0.999


# ---------------------------------------------------------------- checks chosen from the graph

from inline_models import parse_model  # noqa: E402

import workbench  # noqa: E402
from workbench.ir.graph import GraphIndex  # noqa: E402
from workbench.task.checks import (  # noqa: E402
    EmbeddingTask,
    MaskTask,
    TopClassTask,
    check_outputs,
    task_for_output,
)


def _index(text, **initializers):
    return GraphIndex.of(load_model(parse_model(text, **initializers)))


def test_outputs_are_recognised_from_the_nodes_that_make_them():
    index = _index(
        """
        g (float[2, 8] x, float[2, 4, 6] h) => (float[2, 8] probs, float[2, 8] mask, float[2, 8] unit,
                                             float[2, 6] pooled, float[2, 4, 6] hidden, float[2, 8] plain) {
            soft = Softmax <axis = -1> (x)
            probs = Identity(soft)
            mask = Sigmoid(x)
            norm = ReduceL2 <keepdims = 1, axes = [1]> (x)
            unit = Div(x, norm)
            pooled = ReduceMean <keepdims = 0, axes = [1]> (h)
            hidden = LayerNormalization <axis = -1> (h, gamma, beta)
            plain = Relu(x)
        }
        """,
        gamma=np.ones(6, np.float32), beta=np.zeros(6, np.float32),
    )
    assert task_for_output(index, "probs") == TopClassTask("probs", "class probabilities", -1)
    assert task_for_output(index, "mask") == MaskTask("mask")
    assert task_for_output(index, "unit") == EmbeddingTask("unit")
    assert task_for_output(index, "pooled") == EmbeddingTask("pooled")
    feed = {"attention_mask": np.ones((2, 4), np.int64)}
    assert task_for_output(index, "hidden", (2, 4, 6), feed) == SentenceEmbeddingTask("hidden", "attention_mask")
    assert task_for_output(index, "plain", (2, 8)) is None


def test_raw_logits_over_a_large_last_axis_read_as_classes():
    index = _index("g (float[3, 16] x) => (float[3, 500] y) { y = MatMul(x, w) }", w=np.ones((16, 500), np.float32))
    assert task_for_output(index, "y", (3, 500)) == TopClassTask("y", "logits")
    assert task_for_output(index, "y", (3, 50)) is None  # 50 classes after a MatMul: could be anything


def _recogniser(rng):
    """Softmax over 200 classes at 80 positions; logits near 500, where FP16's spacing is 0.25."""
    model = parse_model("g (float[80, 200] x) => (float[80, 200] y) { y = Softmax <axis = -1> (x) }")
    logits = rng.uniform(495, 500, (80, 200)).astype(np.float32)
    logits[np.arange(80), rng.integers(0, 200, 80)] = 503.0  # a clear winner per position: 3 above the rest
    return model, {"x": logits}


def test_a_recogniser_off_in_numbers_but_not_in_characters_reads_task_ok(rng):
    model, feed = _recogniser(rng)
    report = workbench.diagnose(model, inputs=feed)
    assert report.verdict == "divergent" and report.outputs["y"].rel_l2 > 1e-2
    assert report.tasks["y"].ok and report.tasks["y"].metrics["same_top1"] == 80
    assert "divergent (rel-L2" in report.summary()
    assert "task ok: same top-1 at 100% of 80 positions" in report.summary()


def _detector():
    # A BatchNorm-like scale: the variance 9.79e7 is inf in FP16, sqrt(inf) = inf and x / inf = 0:
    # every logit becomes 0 and the map 0.5 everywhere; the text pixels are lost.
    return parse_model(
        """
        g (float[1, 1, 32, 32] x) => (float[1, 1, 32, 32] map) {
            sd = Sqrt(var)
            logits = Div(x, sd)
            map = Sigmoid(logits)
        }
        """,
        var=np.array(9.79e7, np.float32),
    )


def test_a_detector_whose_map_is_lost_reads_task_broken():
    image = np.full((1, 1, 32, 32), -5 * 9894.4, np.float32)
    image[..., 10:14, 4:28] = 5 * 9894.4  # a line of "text"
    report = workbench.diagnose(_detector(), inputs={"x": image})
    result = report.tasks["map"]
    assert not result.ok and result.metrics["iou@0.5"] == 0.0 and result.metrics["pixels@0.5"] == 96
    assert "task broken: IoU at 0.3" in report.summary()


def test_a_map_with_nothing_to_find_says_so():
    reference = {"m": np.full((1, 1, 4, 4), 1e-5, np.float32)}
    result = MaskTask("m").check({}, reference, {"m": np.zeros((1, 1, 4, 4), np.float16)})
    assert result.ok and "the feed shows nothing to find" in result.lines[0]


def test_top_class_positions_with_nan_count_as_different():
    reference = {"p": np.array([[0.1, 0.9], [0.8, 0.2]], np.float32)}
    result = TopClassTask("p").check({}, reference, {"p": np.array([[0.1, 0.9], [np.nan, 0.2]], np.float16)})
    assert not result.ok and result.metrics["same_top1"] == 1 and result.metrics["nonfinite_positions"] == 1


def test_a_check_that_cannot_run_is_left_out_not_raised():
    index = _index("g (float[2, 8] x) => (float[2, 8] y) { y = Softmax <axis = -1> (x) }")
    reference = {"y": np.full((2, 8), np.nan, np.float32)}  # a non-finite reference: no task check
    assert check_outputs(index, reference, {"y": np.zeros((2, 8), np.float16)}) == {}
    good = {"y": np.eye(2, 8, dtype=np.float32)}
    assert check_outputs(index, good, good)["y"].ok


@pytest.mark.slow
def test_minilm_diagnosis_checks_its_sentence_embeddings_without_a_false_alarm():
    from sample_models import build

    feed = build.minilm_feed()
    clean = workbench.diagnose(build.export_minilm("modern"), inputs=feed)
    assert clean.verdict == "ok" and clean.roots == ()
    result = clean.tasks["last_hidden_state"]
    assert result.name == "sentence embedding" and result.ok, result.summary()
    assert "task ok: 4 sentences: min cosine" in clean.summary()
    broken = workbench.diagnose(build.export_minilm("legacy"), inputs=feed)  # every embedding NaN
    assert not broken.tasks["last_hidden_state"].ok and "task broken" in broken.summary()
