"""The per-input runner: what is done once per model, not once per input, and the threads a worker asks for."""

import models
import pytest

import workbench.ir.graph
from workbench.convert.low_precision import convert_to_fp16
from workbench.engines import emulate
from workbench.io.model import load_model
from workbench.sweep import runner


@pytest.fixture
def pair():
    reference = load_model(models.masked_attention(), name="reference")
    candidate = convert_to_fp16(reference)[0]
    yield reference, candidate
    runner.set_threads(0)  # leave no sessions or thread count behind for the other tests


def test_the_engine_is_chosen_once_per_model_not_per_input(pair, monkeypatch):
    """Telling an FP16 model from an FP32 one runs onnx's shape inference over the graph; it was done twice per input."""
    inferred = []
    infer = workbench.ir.graph.infer_elem_types
    monkeypatch.setattr(workbench.ir.graph, "infer_elem_types", lambda *a, **k: inferred.append(1) or infer(*a, **k))
    runner.set_threads(0)
    records = [runner.evaluate(*pair, f"feed {i}", models.feed(i, padded_row=2 if i == 1 else None), runner.Check())
               for i in range(5)]
    assert [r["failed"] for r in records] == [False, True, False, False, False]
    assert len(inferred) == 2  # one per model


def test_a_workers_thread_count_reaches_the_emulated_candidates_session(pair, monkeypatch):
    """A pool of N workers gives each cores // N threads; the FP16 candidate's session took every core regardless."""
    built = []
    build = emulate.build_session
    monkeypatch.setattr(emulate, "build_session", lambda *a, **k: built.append(build(*a, **k)) or built[-1])
    reference, candidate = pair
    runner.set_threads(1)
    runner.run_outputs(candidate, models.feed(0))
    (session,) = built
    assert session.get_session_options().intra_op_num_threads == 1
