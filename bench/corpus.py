"""Corpus run (issue 6): `diagnose --precision fp16` on every model a user might bring.

    .venv/bin/python bench/corpus.py                # all of it; writes bench/work/corpus.md and corpus.json
    .venv/bin/python bench/corpus.py --only bert    # names containing "bert"

The corpus: the models shipped inside the installed `onnx` package (backend test data: light, real,
simple, pytorch-converted, pytorch-operator; fed their test_data_set_0 inputs where they have them)
and transformers architectures exported here with tiny random-weight configs (generated feeds).
Exports are cached under bench/work/corpus/. Each model ends in a verdict or a one-line
WorkbenchError; anything else is an internal error, i.e. a bug in the workbench.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

os.environ.setdefault("HF_HUB_OFFLINE", "1")

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
CACHE = WORK / "corpus"
BACKEND_DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
BACKEND_DIRS = ("light", "real", "simple", "pytorch-converted", "pytorch-operator")


@dataclass(frozen=True)
class Case:
    name: str
    group: str
    path: Path | None  # None: nothing to run (e.g. a model the package does not ship)
    feed_dir: Path | None = None  # test_data_set_0 with input_*.pb, if any
    note: str = ""


@dataclass
class Outcome:
    name: str
    group: str
    status: str  # ok | nonfinite | divergent | error | internal | skipped
    detail: str
    seconds: float
    nodes: int = 0
    note: str = ""


# ---------------------------------------------------------------- the onnx package's models


def backend_cases(dirs=BACKEND_DIRS) -> list[Case]:
    """Every model.onnx (or light_*.onnx) in the onnx package's backend test data."""
    cases = []
    for group in dirs:
        root = BACKEND_DATA / group
        for entry in sorted(root.iterdir()):
            if entry.is_dir():
                model = entry / "model.onnx"
                feed_dir = entry / "test_data_set_0"
                cases.append(Case(entry.name, group, model if model.is_file() else None,
                                  feed_dir if feed_dir.is_dir() else None,
                                  "" if model.is_file() else "not shipped (data.json: a download URL)"))
            elif entry.suffix == ".onnx":
                cases.append(Case(entry.stem, group, entry))
    return cases


def backend_feed(model: onnx.ModelProto, feed_dir: Path | None) -> dict | None:
    """The test_data_set_0 inputs keyed by the model's input names (None: generate a feed instead)."""
    if feed_dir is None:
        return None
    files = sorted(feed_dir.glob("input_*.pb"), key=lambda p: int(p.stem.split("_")[1]))
    initializers = {t.name for t in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in initializers]
    if not files or len(files) != len(names):
        return None
    feed = {}
    for name, file in zip(names, files):
        tensor = onnx.TensorProto()
        tensor.ParseFromString(file.read_bytes())
        feed[name] = numpy_helper.to_array(tensor)
    return feed


# ---------------------------------------------------------------- transformers architectures


def _text_feed(vocab: int = 100) -> dict[str, np.ndarray]:
    ids = np.random.default_rng(1).integers(1, vocab, size=(2, 8), dtype=np.int64)
    mask = np.ones((2, 8), np.int64)
    mask[1, -3:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _small(**extra) -> dict:
    return dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=64, max_position_embeddings=64, **extra)


def _arch_bert():
    from transformers import BertConfig, BertModel
    return BertModel(BertConfig(**_small()), add_pooling_layer=False)


def _arch_distilbert():
    from transformers import DistilBertConfig, DistilBertModel
    return DistilBertModel(DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                            max_position_embeddings=64))


def _arch_roberta():
    from transformers import RobertaConfig, RobertaModel
    return RobertaModel(RobertaConfig(**_small(pad_token_id=1)), add_pooling_layer=False)


def _arch_albert():
    from transformers import AlbertConfig, AlbertModel
    return AlbertModel(AlbertConfig(**_small(embedding_size=16)), add_pooling_layer=False)


def _arch_electra():
    from transformers import ElectraConfig, ElectraModel
    return ElectraModel(ElectraConfig(**_small(embedding_size=16)))


def _arch_deberta_v2():
    from transformers import DebertaV2Config, DebertaV2Model
    return DebertaV2Model(DebertaV2Config(**_small(relative_attention=True, position_buckets=16,
                                                   pos_att_type=["p2c", "c2p"])))


def _arch_gpt2():
    from transformers import GPT2Config, GPT2Model
    return GPT2Model(GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=2, n_positions=64, use_cache=False,
                                bos_token_id=0, eos_token_id=0))


def _arch_t5_encoder():
    from transformers import T5Config, T5EncoderModel
    return T5EncoderModel(T5Config(vocab_size=100, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
                                   use_cache=False))


def _arch_bart():
    from transformers import BartConfig, BartModel
    return BartModel(BartConfig(vocab_size=100, d_model=32, encoder_layers=2, decoder_layers=2,
                                encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                                decoder_ffn_dim=64, max_position_embeddings=64, use_cache=False))


def _arch_vit():
    from transformers import ViTConfig, ViTModel
    return ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                              image_size=32, patch_size=8), add_pooling_layer=False)


ARCHITECTURES = {
    "bert": _arch_bert, "distilbert": _arch_distilbert, "roberta": _arch_roberta, "albert": _arch_albert,
    "electra": _arch_electra, "deberta_v2": _arch_deberta_v2, "gpt2": _arch_gpt2,
    "t5_encoder": _arch_t5_encoder, "bart": _arch_bart, "vit": _arch_vit,
}


def arch_feed(name: str) -> dict[str, np.ndarray]:
    if name == "vit":
        return {"pixel_values": np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)}
    return _text_feed()


def _first_output(module, pixels: bool = False):
    """`module` returning only its first output, with named arguments (the dynamo exporter needs them)."""
    import torch

    class TextFirstOutput(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = module

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask)[0]

    class PixelFirstOutput(TextFirstOutput):
        def forward(self, pixel_values):
            return self.inner(pixel_values=pixel_values)[0]

    return (PixelFirstOutput() if pixels else TextFirstOutput()).eval()


def export_architecture(name: str, directory: Path = CACHE) -> tuple[Path, str]:
    """The tiny `name` model exported to `directory`/name.onnx (cached); returns (path, exporter used)."""
    import torch

    path = directory / f"{name}.onnx"
    marker = path.with_suffix(".exporter")
    if path.is_file() and marker.is_file():
        return path, marker.read_text()
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    module = _first_output(ARCHITECTURES[name]().eval(), pixels=name == "vit")
    feed = arch_feed(name)
    try:
        model = _export_dynamo(module, feed)
        exporter = "dynamo"
    except Exception as exc:  # noqa: BLE001  (an exporter failure: fall back, and say so)
        print(f"  {name}: dynamo export failed ({type(exc).__name__}); legacy exporter", file=sys.stderr)
        model = _export_legacy(module, feed)
        exporter = f"legacy (dynamo: {type(exc).__name__})"
    onnx.save(model, str(path))
    marker.write_text(exporter)
    return path, exporter


def _dynamic_axes(feed) -> dict:
    return {k: ({0: "batch"} if v.dtype.kind == "f" else {0: "batch", 1: "sequence"}) for k, v in feed.items()}


def _export_dynamo(module, feed) -> onnx.ModelProto:
    import torch

    kwargs = {k: torch.from_numpy(v) for k, v in feed.items()}
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    shapes = {k: ({0: batch} if v.dtype.is_floating_point else {0: batch, 1: seq}) for k, v in kwargs.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (), kwargs=kwargs, dynamo=True, verbose=False, dynamic_shapes=shapes,
                                    input_names=list(kwargs), output_names=["output"])
    return program.model_proto


def _export_legacy(module, feed) -> onnx.ModelProto:
    import io

    import torch

    class Positional(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = module

        def forward(self, *args):
            return self.inner(*args)

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Positional().eval(), tuple(torch.from_numpy(v) for v in feed.values()), buffer,
                          dynamo=False, opset_version=17, input_names=list(feed), output_names=["output"],
                          dynamic_axes=_dynamic_axes(feed))
    return onnx.load_from_string(buffer.getvalue())


def architecture_cases(names=ARCHITECTURES) -> list[Case]:
    cases = []
    for name in names:
        try:
            path, exporter = export_architecture(name)
            cases.append(Case(name, "transformers", path, note=f"exporter: {exporter}"))
        except Exception as exc:  # noqa: BLE001  (an export failure is the exporter's, not ours: record it)
            cases.append(Case(name, "transformers", None, note=f"export failed: {type(exc).__name__}: {exc}"[:200]))
    return cases


# ---------------------------------------------------------------- running and recording


def run_case(case: Case) -> Outcome:
    """Diagnose one model: its verdict, a one-line WorkbenchError, or an internal error (a bug)."""
    from workbench import diagnose
    from workbench.errors import WorkbenchError

    if case.path is None:
        return Outcome(case.name, case.group, "skipped", case.note, 0.0)
    start = time.perf_counter()
    try:
        feed = backend_feed(onnx.load(str(case.path)), case.feed_dir)
        report = diagnose(str(case.path), inputs=feed)
        status, detail = report.verdict, _root_summary(report)
    except WorkbenchError as exc:
        status, detail = "error", str(exc)
    except Exception as exc:  # noqa: BLE001  (the point: record the bug, go on with the corpus)
        status, detail = "internal", f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        traceback.print_exc()
    nodes = _node_count(case.path)
    return Outcome(case.name, case.group, status, detail, time.perf_counter() - start, nodes, case.note)


def _root_summary(report) -> str:
    if not report.roots:
        return f"{len(report.warnings)} warning(s)" if report.warnings else ""
    root = report.roots[0]
    return f"{len(report.roots)} root(s), first {root.kind} at {root.node}"


def _node_count(path: Path) -> int:
    try:
        return len(onnx.load(str(path), load_external_data=False).graph.node)
    except Exception:  # noqa: BLE001
        return 0


def counts(outcomes: list[Outcome]) -> dict[str, int]:
    result: dict[str, int] = {}
    for outcome in outcomes:
        result[outcome.status] = result.get(outcome.status, 0) + 1
    return result


def write_table(outcomes: list[Outcome], seconds: float, export_seconds: float, path: Path) -> None:
    diagnosed = sum(o.seconds for o in outcomes)
    lines = [
        "# Corpus: `workbench diagnose --precision fp16` on every model",
        "",
        f"{len(outcomes)} models, {seconds:.0f} s in all ({export_seconds:.0f} s exporting or loading cached exports, "
        f"{diagnosed:.0f} s diagnosing); " + ", ".join(f"{k} {v}" for k, v in sorted(counts(outcomes).items())),
        "",
        shipped_line(outcomes),
        "",
        "Outcomes: a verdict (ok, nonfinite, divergent), `error` (a one-line WorkbenchError, shown), `internal`",
        "(a workbench bug), `skipped` (the onnx package ships only a download URL). Feeds: test_data_set_0 where",
        "the model has one, generated otherwise.",
        "",
        "| group | model | nodes | outcome | detail | s | note |",
        "|---|---|---:|---|---|---:|---|",
    ]
    for o in outcomes:
        detail = o.detail.replace("|", "\\|")
        lines.append(f"| {o.group} | {o.name} | {o.nodes} | {o.status} | {detail} | {o.seconds:.2f} | {o.note} |")
    path.write_text("\n".join(lines) + "\n")


def shipped_line(outcomes: list[Outcome]) -> str:
    """Issue 10's count: of the models the onnx package ships in full, how many end in a verdict, and why not the rest."""
    shipped = [o for o in outcomes if o.group != "transformers" and o.status != "skipped"]
    verdicts = [o for o in shipped if o.status in ("ok", "nonfinite", "divergent")]
    reasons: dict[str, int] = {}
    for o in shipped:
        if o not in verdicts:
            reason = o.detail.split(";")[0].split(", which")[0]
            reasons[reason] = reasons.get(reason, 0) + 1
    rest = "; ".join(f"{n}: {reason}" for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
    return f"Of the {len(shipped)} models the onnx package ships in full, {len(verdicts)} end in a verdict. The others: {rest or 'none'}."


def corpus_section(outcomes: list[dict], seconds: float) -> str:
    """The RESULTS.md summary of a whole-corpus run (`corpus.json`); the full table is CORPUS.md."""
    tally: dict[str, int] = {}
    for outcome in outcomes:
        tally[outcome["status"]] = tally.get(outcome["status"], 0) + 1
    return "\n".join([
        "## f. Corpus: every model a user might bring",
        f"`bench/corpus.py`: {len(outcomes)} models (the `onnx` package's backend test models and 10 transformers "
        f"architectures exported here with random weights) in {seconds:.0f} s: "
        + ", ".join(f"{k} {v}" for k, v in sorted(tally.items()))
        + ". `internal` (a workbench traceback) must be 0; `error` is a one-line reason. Full table: [CORPUS.md](CORPUS.md).",
    ])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run only models whose name contains this")
    parser.add_argument("--no-export", action="store_true", help="skip the transformers architectures")
    args = parser.parse_args(argv)
    WORK.mkdir(exist_ok=True)
    start = time.perf_counter()
    cases = backend_cases() + ([] if args.no_export else architecture_cases())
    exports = time.perf_counter() - start
    outcomes = []
    for case in cases:
        if args.only in case.name:
            outcomes.append(run_case(case))
            print(f"{case.group:18} {case.name:45} {outcomes[-1].status:10} {outcomes[-1].seconds:6.2f}s {outcomes[-1].detail[:90]}",
                  flush=True)
    seconds = time.perf_counter() - start
    write_table(outcomes, seconds, exports, WORK / "corpus.md")
    if not args.only and not args.no_export:  # the whole corpus: the table the README links
        write_table(outcomes, seconds, exports, HERE / "CORPUS.md")
    (WORK / "corpus.json").write_text(json.dumps([asdict(o) for o in outcomes], indent=1))
    print(f"{len(outcomes)} models in {seconds:.0f} s: {counts(outcomes)}")
    return 1 if counts(outcomes).get("internal") else 0


if __name__ == "__main__":
    sys.exit(main())
