"""Task-level checks: does the candidate still do the model's job, in terms a user reads?

Beside the tensor metrics of `compare`, two checks on outputs already computed (numpy only):

- `SentenceEmbeddingTask`: mean-pooled, L2-normalised sentence embeddings (the all-MiniLM-L6-v2
  recipe); the cosine between each sentence's reference and candidate embedding, and whether the
  ranking of the other sentences by similarity is unchanged for every sentence.
- `MaskedLmTask`: the top-k tokens at each checked position, which must be the same, in the same order.

`reference` and `candidate` are dicts output name -> array: the FP32 reference outputs and the
candidate's (float32 or float16, possibly holding NaN or inf). Everything is computed in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from workbench.errors import WorkbenchError

Arrays = dict[str, np.ndarray]
MAX_LINES = 10  # per kind of line; a batch of many sentences or positions lists the worst ones only


@dataclass(frozen=True)
class TaskResult:
    """The outcome of one task check: `ok`, numbers in `metrics`, and sentences in `lines`."""

    name: str
    ok: bool
    metrics: dict
    lines: tuple[str, ...]

    def to_dict(self) -> dict:
        """JSON-safe: NaN and inf become None, numpy scalars become Python numbers."""
        return {"name": self.name, "ok": self.ok, "metrics": {k: _json_value(v) for k, v in self.metrics.items()},
                "lines": list(self.lines)}

    def summary(self) -> str:
        return "\n".join([f"{self.name}: {'OK' if self.ok else 'FAILED'}", *(f"  {line}" for line in self.lines)])

    def __repr__(self) -> str:
        return self.summary()


# ---------------------------------------------------------------- sentence embeddings


@dataclass(frozen=True)
class SentenceEmbeddingTask:
    """Sentence embeddings from a token-level output [batch, sequence, hidden], one sentence per row.

    Pooling as sentence-transformers does for all-MiniLM-L6-v2: sum(h * mask) / max(sum(mask), 1e-9) over
    the sequence, then L2 normalisation. As there, padded positions are multiplied by 0, so a NaN at a
    padded position still makes the embedding NaN: that is what the user's pipeline would return.
    `mask_input` is the feed's attention mask [batch, sequence]; None pools over every position.

    ok when every sentence's cosine(reference, candidate) >= `min_cosine` and, for every sentence i, the
    other sentences sorted by similarity to i come in the same order with the candidate's embeddings as
    with the reference's, up to ties: two sentences within `RANKING_TIE` (1e-3) of each other in the
    reference's similarity may come in either order. The ranking needs at least 3 sentences (with 2
    there is nothing to order); with fewer it is skipped, said so in the lines, and `rankings_equal`
    is None: it is not an error, since the cosine check alone is still meaningful.
    """

    output: str = "last_hidden_state"
    mask_input: str | None = "attention_mask"
    min_cosine: float = 0.99

    def __post_init__(self):
        if not -1.0 <= self.min_cosine <= 1.0:
            raise WorkbenchError(f"min_cosine must be between -1 and 1, not {self.min_cosine}.")

    def check(self, feed: Arrays, reference: Arrays, candidate: Arrays, *, label: str = "FP16") -> TaskResult:
        """Compare the sentence embeddings of `reference` and `candidate`; `label` names the candidate in lines."""
        ref_hidden, cand_hidden = _output_pair(self.output, reference, candidate, "[batch, sequence, hidden]")
        mask = self._mask(feed, ref_hidden.shape)
        ref_emb = mean_pooled_embeddings(ref_hidden, mask)
        cand_emb = mean_pooled_embeddings(cand_hidden, mask)
        with np.errstate(invalid="ignore"):
            cosines = np.sum(ref_emb * cand_emb, axis=1)  # both unit length, or NaN
        finite = np.isfinite(cand_emb).all(axis=1)
        cosines[~finite] = np.nan
        lines = [_cosine_headline(cosines, self.min_cosine, label)]
        lines += _cosine_lines(cosines, cand_hidden, mask, self.output, label, self.min_cosine)
        rankings_equal, ranking_lines = _compare_rankings(ref_emb, cand_emb, label)
        lines += ranking_lines
        cosines_ok = bool(finite.all() and np.all(cosines >= self.min_cosine))
        metrics = {
            "sentences": len(cosines),
            "min_cosine": float(np.min(cosines)) if finite.all() else float("nan"),
            "mean_cosine": float(np.mean(cosines)) if finite.all() else float("nan"),
            "threshold": self.min_cosine,
            "nonfinite_sentences": int(np.count_nonzero(~finite)),
            "rankings_equal": rankings_equal,
        }
        return TaskResult("sentence embedding", cosines_ok and rankings_equal is not False, metrics, tuple(lines))

    def _mask(self, feed: Arrays, shape: tuple[int, ...]) -> np.ndarray:
        if self.mask_input is None:
            return np.ones(shape[:2], np.float64)
        if self.mask_input not in feed:
            raise WorkbenchError(f"mask input '{self.mask_input}' is not in the feed (it has: {_names(feed)}); "
                                 "pass mask_input=None to pool over every position.")
        mask = np.asarray(feed[self.mask_input])
        if mask.shape != shape[:2]:
            raise WorkbenchError(f"mask input '{self.mask_input}' has shape {list(mask.shape)}, "
                                 f"but '{self.output}' is {list(shape)}: expected [batch, sequence] = {list(shape[:2])}.")
        return mask.astype(np.float64)


def mean_pooled_embeddings(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[batch, sequence, hidden] (any float dtype) and mask [batch, sequence] -> unit float64 [batch, hidden].

    A non-finite hidden state anywhere in a row, padded or not, makes that row's embedding non-finite.
    """
    hidden = hidden.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        summed = np.sum(hidden * mask[:, :, None], axis=1)
        pooled = summed / np.maximum(np.sum(mask, axis=1), 1e-9)[:, None]
        norms = np.sqrt(np.sum(np.square(pooled), axis=1))
        return pooled / np.maximum(norms, 1e-12)[:, None]  # torch.nn.functional.normalize's eps


def _cosine_headline(cosines: np.ndarray, threshold: float, label: str) -> str:
    count = f"{len(cosines)} sentence{'s' if len(cosines) != 1 else ''}"
    if not np.isfinite(cosines).all():
        bad = int(np.count_nonzero(~np.isfinite(cosines)))
        return f"{count}: {bad} {label} embedding{'s are' if bad != 1 else ' is'} NaN (non-finite hidden states)"
    return f"{count}: min cosine {np.min(cosines):.6f} (threshold {threshold}), mean {np.mean(cosines):.6f}"


def _cosine_lines(cosines: np.ndarray, cand_hidden: np.ndarray, mask: np.ndarray, output: str, label: str,
                  threshold: float) -> list[str]:
    """One line per sentence; with more than MAX_LINES sentences, the lowest cosines only."""
    order = np.arange(len(cosines))
    if len(order) > MAX_LINES:
        order = np.argsort(np.nan_to_num(cosines, nan=-np.inf), kind="stable")
    lines = []
    for i in order:
        if np.isfinite(cosines[i]):
            below = " (below the threshold)" if cosines[i] < threshold else ""
            lines.append(f"sentence {i}: cosine {cosines[i]:.6f}{below}")
        else:
            nonfinite = ~np.isfinite(cand_hidden[i])
            unpadded = int(np.count_nonzero(nonfinite & (mask[i, :, None] != 0)))
            lines.append(f"sentence {i}: cosine nan: {label} `{output}` holds {int(np.count_nonzero(nonfinite))} "
                         f"NaN/inf values in this sentence ({unpadded} at unpadded positions)")
    return _limited(lines)


def _compare_rankings(ref_emb: np.ndarray, cand_emb: np.ndarray, label: str) -> tuple[bool | None, list[str]]:
    """(rankings_equal, lines): None when there are fewer than 3 sentences, False when not comparable."""
    sentences = len(ref_emb)
    if sentences < 3:
        return None, [f"ranking not checked: it needs at least 3 sentences, got {sentences}"]
    if not np.isfinite(cand_emb).all():
        return False, [f"ranking not comparable: some {label} embeddings are NaN"]
    ref_sim, cand_sim = ref_emb @ ref_emb.T, cand_emb @ cand_emb.T
    changed = []
    for i in range(sentences):
        ref_order, cand_order = _others_by_similarity(ref_sim, i), _others_by_similarity(cand_sim, i)
        if _inverted(ref_sim[i], cand_order):
            changed.append(
                f"sentence {i}: ranking changed: FP32 orders the others {_order_text(ref_order, ref_sim[i])}, "
                f"{label} {_order_text(cand_order, cand_sim[i])}")
    if not changed:
        return True, [f"ranking unchanged: for each of the {sentences} sentences, the others come in the same order"]
    return False, _limited(changed)


# Two sentences whose FP32 similarities to a third differ by less than this are tied: FP16's own rounding
# of the embeddings moves a cosine by about 1e-4 (MiniLM: 0.1047 against 0.1045 swapped while every
# sentence's cosine stayed 0.999999), and a user ranking by similarity cannot tell them apart either.
RANKING_TIE = 1e-3


def _inverted(ref_similarity: np.ndarray, cand_order: list[int]) -> bool:
    """Whether the candidate puts some sentence before one the reference finds clearly (> RANKING_TIE) more similar."""
    ranked = ref_similarity[cand_order]  # the reference's similarities, in the candidate's order
    later_clearly_more_similar = ranked[None, :] - ranked[:, None] > RANKING_TIE  # [a, b]: b clearly above a
    return bool(np.triu(later_clearly_more_similar, k=1).any())


def _others_by_similarity(similarity: np.ndarray, i: int) -> list[int]:
    """The sentences other than i, most similar to i first (ties by index)."""
    order = np.argsort(-similarity[i], kind="stable")
    return [int(j) for j in order if j != i]


def _order_text(order: list[int], similarity_row: np.ndarray) -> str:
    return ", ".join(f"{j} ({similarity_row[j]:.4f})" for j in order)


# ---------------------------------------------------------------- masked language model


@dataclass(frozen=True)
class MaskedLmTask:
    """Top-k tokens from masked-LM logits [batch, sequence, vocab].

    Checked positions: where `input_ids` equals `mask_token_id`; with `mask_token_id=None`, every
    position the attention mask (`mask_input` in the feed) marks as a token, or every position when
    `mask_input` is None.
    A position passes when the candidate's top-k token ids equal the reference's in the same order (what a
    fill-mask pipeline shows); `overlap` also counts tokens shared regardless of order. A position where
    the candidate's logits hold NaN or +inf fails: its top-k would be an artefact of sorting NaN,
    and softmax there is NaN. `tokens` (id -> string) prints words instead of ids; ids past its end print as
    `#id`, since a model's vocabulary is often padded beyond its tokenizer's. Positions are (row, position)
    in the batch, counted from 0, as are sentences.
    """

    output: str = "logits"
    input_ids: str = "input_ids"
    mask_token_id: int | None = None
    k: int = 5
    tokens: Sequence[str] | None = None
    mask_input: str | None = "attention_mask"

    def __post_init__(self):
        if self.k < 1:
            raise WorkbenchError(f"k must be at least 1, not {self.k}.")
        if self.tokens is not None:
            object.__setattr__(self, "tokens", tuple(self.tokens))

    @property
    def name(self) -> str:
        return f"masked LM top-{self.k}"

    def check(self, feed: Arrays, reference: Arrays, candidate: Arrays, *, label: str = "FP16") -> TaskResult:
        """Compare the top-k tokens of `reference` and `candidate`; `label` names the candidate in lines."""
        ref_logits, cand_logits = _output_pair(self.output, reference, candidate, "[batch, sequence, vocab]")
        if self.k > ref_logits.shape[2]:
            raise WorkbenchError(f"k = {self.k} is more than the vocabulary of '{self.output}' ({ref_logits.shape[2]}).")
        positions = self._positions(feed, ref_logits.shape)
        checks = [self._check_position(ref_logits[b, t], cand_logits[b, t], (b, t), label) for b, t in positions]
        same = [c for c in checks if c.same]
        nan_positions = sum(1 for c in checks if c.overlap is None)
        overlap = [c.overlap for c in checks if c.overlap is not None]
        lines = [self._headline(len(positions), len(same), nan_positions, label)]
        lines += _limited([c.line for c in checks if not c.same] + [c.line for c in checks if c.same])
        metrics = {
            "positions": len(positions),
            "same_topk": len(same),
            "nonfinite_positions": nan_positions,
            "mean_overlap": float(np.mean(overlap)) / self.k if overlap else float("nan"),  # shared tokens / k
            "k": self.k,
        }
        return TaskResult(self.name, len(same) == len(positions), metrics, tuple(lines))

    def _positions(self, feed: Arrays, shape: tuple[int, ...]) -> list[tuple[int, int]]:
        if self.mask_token_id is not None:
            checked = _feed_array(feed, self.input_ids, shape[:2], "input ids") == self.mask_token_id
            if not checked.any():
                raise WorkbenchError(f"no position of '{self.input_ids}' holds the mask token id {self.mask_token_id}.")
        elif self.mask_input is not None:
            checked = _feed_array(feed, self.mask_input, shape[:2], "mask input") != 0
            if not checked.any():
                raise WorkbenchError(f"mask input '{self.mask_input}' is 0 everywhere: no position to check.")
        else:
            checked = np.ones(shape[:2], bool)
        return [(int(b), int(t)) for b, t in zip(*np.nonzero(checked))]

    def _check_position(self, ref: np.ndarray, cand: np.ndarray, where: tuple[int, int], label: str) -> "_PositionCheck":
        ref, cand = ref.astype(np.float64), cand.astype(np.float64)
        ref_top = _top_k(ref, self.k)
        place = f"row {where[0]} position {where[1]}"
        bad = np.isnan(cand) | (cand == np.inf)
        if bad.any():
            kind = "NaN" if np.isnan(cand).any() else "+inf"
            line = (f"{place}: {label} logits hold {kind} ({int(np.count_nonzero(bad))} of {cand.size}), "
                    f"top-{self.k} meaningless; FP32 top-{self.k} {self._words(ref_top)}")
            return _PositionCheck(False, None, line)
        cand_top = _top_k(cand, self.k)
        same = ref_top == cand_top
        line = f"{place}: FP32 top-{self.k} {self._words(ref_top)}, {label} top-{self.k} {self._words(cand_top)}"
        if not same:
            rank = next(r for r, (a, b) in enumerate(zip(ref_top, cand_top)) if a != b)
            gap = ref[ref_top[rank]] - ref[cand_top[rank]]
            line += (f"; first difference at rank {rank + 1}: FP32 logits of {self._words([ref_top[rank]])} "
                     f"and {self._words([cand_top[rank]])} differ by {gap:.3g}")
        return _PositionCheck(same, len(set(ref_top) & set(cand_top)), line)

    def _headline(self, positions: int, same: int, nonfinite: int, label: str) -> str:
        where = "[MASK] positions" if self.mask_token_id is not None else "positions"
        text = f"{same} of {positions} {where} have the same top-{self.k} tokens in the same order"
        return text + (f"; {nonfinite} have {label} logits with NaN/+inf" if nonfinite else "")

    def _words(self, ids: Sequence[int]) -> str:
        if self.tokens is None:
            return "`" + " ".join(str(i) for i in ids) + "`"
        return "`" + " ".join(self.tokens[i] if i < len(self.tokens) else f"#{i}" for i in ids) + "`"


class _PositionCheck(NamedTuple):
    same: bool  # same top-k ids in the same order
    overlap: int | None  # top-k ids shared in any order; None when the candidate's logits are NaN/+inf
    line: str


def _top_k(logits: np.ndarray, k: int) -> list[int]:
    """The k largest logits' ids, largest first; ties go to the lower id (a stable sort)."""
    return [int(i) for i in np.argsort(-logits, kind="stable")[:k]]


# ---------------------------------------------------------------- checks chosen from the graph


@dataclass(frozen=True)
class TopClassTask:
    """Class scores along `axis` (probabilities or raw logits): top-1 and top-5 agreement per position.

    A position is every index over the other axes: a classifier's rows, a recogniser's characters, a
    language model's tokens. ok when the candidate's top-1 equals the reference's at every position
    (what a decoder or an argmax shows); the top-5 set is reported beside it. A position where the
    candidate holds NaN or +inf counts as different.
    """

    output: str
    kind: str = "class probabilities"  # or "logits"
    axis: int = -1
    k: int = 5

    @property
    def name(self) -> str:
        return f"{self.kind} top-1"

    def check(self, feed: Arrays, reference: Arrays, candidate: Arrays, *, label: str = "FP16") -> TaskResult:
        ref, cand = _float_pair(self.output, reference, candidate)
        if ref.ndim == 0:
            raise WorkbenchError(f"output '{self.output}' is a scalar: it has no classes to rank.")
        ref_rows = np.moveaxis(ref, self.axis, -1).reshape(-1, ref.shape[self.axis]).astype(np.float64)
        cand_rows = np.moveaxis(cand, self.axis, -1).reshape(-1, ref.shape[self.axis]).astype(np.float64)
        bad = np.isnan(cand_rows).any(axis=1) | (cand_rows == np.inf).any(axis=1)
        k = min(self.k, ref_rows.shape[1])
        same_top1 = (np.argmax(ref_rows, axis=1) == np.argmax(np.nan_to_num(cand_rows, nan=-np.inf), axis=1)) & ~bad
        same_topk = np.array([set(_top_k(r, k)) == set(_top_k(c, k)) for r, c in zip(ref_rows, cand_rows)]) & ~bad
        positions = len(ref_rows)
        lines = [f"same top-1 at {_percent(same_top1)} of {positions} position{'s' if positions != 1 else ''}, "
                 f"same top-{k} set at {_percent(same_topk)}"]
        if bad.any():
            lines.append(f"{int(np.count_nonzero(bad))} position(s) hold NaN or +inf in {label}")
        lines += _limited([f"position {int(i)}: FP32 top-1 {int(np.argmax(ref_rows[i]))}, {label} "
                           f"{'NaN' if bad[i] else int(np.argmax(cand_rows[i]))}" for i in np.flatnonzero(~same_top1)])
        metrics = {"positions": positions, "same_top1": int(np.count_nonzero(same_top1)),
                   "top1_agreement": float(np.mean(same_top1)) if positions else 1.0,
                   "same_topk": int(np.count_nonzero(same_topk)), "k": k,
                   "nonfinite_positions": int(np.count_nonzero(bad))}
        return TaskResult(self.name, bool(same_top1.all()), metrics, tuple(lines))


@dataclass(frozen=True)
class MaskTask:
    """A probability map (a Sigmoid at the end): the IoU of the pixels above each threshold, per batch row.

    ok when every row's IoU is at least `min_iou` at every threshold. A row where neither the reference nor
    the candidate has a pixel above a threshold agrees (IoU 1) and is said so: the feed shows nothing to find.
    """

    output: str
    thresholds: tuple[float, ...] = (0.3, 0.5)
    min_iou: float = 0.9

    name = "mask IoU"

    def check(self, feed: Arrays, reference: Arrays, candidate: Arrays, *, label: str = "FP16") -> TaskResult:
        ref, cand = _float_pair(self.output, reference, candidate)
        rows = ref.shape[0] if ref.ndim >= 2 else 1
        ref_rows, cand_rows = ref.reshape(rows, -1), np.nan_to_num(cand.reshape(rows, -1).astype(np.float64), nan=-np.inf)
        lines, metrics, ok = [], {"rows": rows, "min_iou": self.min_iou}, True
        for threshold in self.thresholds:
            ref_on, cand_on = ref_rows > threshold, cand_rows > threshold
            union = np.count_nonzero(ref_on | cand_on, axis=1)
            ious = np.where(union > 0, np.count_nonzero(ref_on & cand_on, axis=1) / np.maximum(union, 1), 1.0)
            worst = float(np.min(ious))
            ok = ok and worst >= self.min_iou
            metrics[f"iou@{threshold}"] = worst
            metrics[f"pixels@{threshold}"] = int(np.count_nonzero(ref_on))
            if not union.any():
                lines.append(f"no value above {threshold} in FP32 or {label}: the feed shows nothing to find "
                             "(pass --inputs with a real one)")
            else:
                lines.append(f"IoU at {threshold}: {worst:.3f} (worst of {rows} row{'s' if rows != 1 else ''}; "
                             f"FP32 has {int(np.count_nonzero(ref_on))} values above, {label} "
                             f"{int(np.count_nonzero(cand_on))})")
        return TaskResult(self.name, ok, metrics, tuple(lines))


@dataclass(frozen=True)
class EmbeddingTask:
    """Vectors, one per row (a normalised embedding or a pooled hidden state [batch, dim]).

    Cosine between each row's reference and candidate vector, and the ranking of the other rows by
    similarity, as `SentenceEmbeddingTask` checks it after pooling.
    """

    output: str
    min_cosine: float = 0.99

    name = "embedding"

    def check(self, feed: Arrays, reference: Arrays, candidate: Arrays, *, label: str = "FP16") -> TaskResult:
        ref, cand = _float_pair(self.output, reference, candidate)
        rows = ref.shape[0] if ref.ndim >= 2 else 1
        ref_emb, cand_emb = _unit_rows(ref.reshape(rows, -1)), _unit_rows(cand.reshape(rows, -1))
        with np.errstate(invalid="ignore"):
            cosines = np.sum(ref_emb * cand_emb, axis=1)
        finite = np.isfinite(cosines)
        rankings_equal, ranking_lines = _compare_rankings(ref_emb, cand_emb, label)
        lines = [_cosine_headline(cosines, self.min_cosine, label).replace("sentence", "row"), *ranking_lines]
        ok = bool(finite.all() and np.all(cosines >= self.min_cosine)) and rankings_equal is not False
        metrics = {"rows": rows, "min_cosine": float(np.min(cosines)) if finite.all() else float("nan"),
                   "threshold": self.min_cosine, "rankings_equal": rankings_equal}
        return TaskResult(self.name, ok, metrics, tuple(lines))


def _unit_rows(rows: np.ndarray) -> np.ndarray:
    rows = rows.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        return rows / np.maximum(np.sqrt(np.sum(np.square(rows), axis=1)), 1e-12)[:, None]


def _percent(flags: np.ndarray) -> str:
    return f"{100 * float(np.mean(flags)):.0f}%" if flags.size else "100%"


def _float_pair(output: str, reference: Arrays, candidate: Arrays) -> tuple[np.ndarray, np.ndarray]:
    """The output's reference and candidate arrays: float, same shape, a finite reference."""
    for side, outputs in (("reference", reference), ("candidate", candidate)):
        if output not in outputs:
            raise WorkbenchError(f"output '{output}' is not in the {side} outputs (they are: {_names(outputs)}).")
    ref, cand = np.asarray(reference[output]), np.asarray(candidate[output])
    if ref.dtype.kind != "f" or cand.dtype.kind != "f" or ref.shape != cand.shape:
        raise WorkbenchError(f"output '{output}' must be float of the same shape in both runs, got {ref.dtype} "
                             f"{list(ref.shape)} and {cand.dtype} {list(cand.shape)}.")
    if not np.isfinite(ref).all():
        raise WorkbenchError(f"the reference output '{output}' holds NaN or inf: a task check needs a finite FP32 run.")
    return ref, cand


# Ops after which an output still holds what the node before them made (up to type or layout).
_PASS_THROUGH_OPS = {"Identity", "Cast", "Reshape", "Squeeze", "Unsqueeze", "Flatten"}
_NORMALISERS = {"LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization"}
_LINEAR_OPS = {"MatMul", "Gemm", "Add", "Conv", "ConvTranspose", "Einsum"}
LOGITS_MIN_CLASSES = 100  # a last axis at least this wide after a linear layer reads as logits over a vocabulary


def task_for_output(index, name: str, shape: tuple[int, ...] | None = None, feed: Arrays | None = None):
    """The check a user of output `name` makes, recognised from the nodes that produce it; None if unknown.

    `shape`: the output's shape in a run (the graph may not say); `feed`: to find an attention mask.
    """
    node, reshaped = _final_producer(index, name)
    if node is None:
        return None
    op = node.op_type
    if op in ("Softmax", "LogSoftmax"):
        axis = next((a.i for a in node.attribute if a.name == "axis"), -1 if _opset(index) >= 13 else 1)
        return TopClassTask(name, "class probabilities", -1 if reshaped else axis)
    if op == "Sigmoid":
        return MaskTask(name)
    if op == "LpNormalization" or op == "ReduceMean" or (op == "Div" and _divides_by_norm(index, node)):
        return EmbeddingTask(name)
    rank = len(shape) if shape is not None else None
    if op in _NORMALISERS and rank == 3:
        return SentenceEmbeddingTask(output=name, mask_input=_mask_input(feed, shape))
    if op in _LINEAR_OPS and shape is not None and rank >= 2 and shape[-1] >= LOGITS_MIN_CLASSES:
        return TopClassTask(name, "logits")
    return None


def check_outputs(index, ref_outputs: Arrays, cand_outputs: Arrays, feed: Arrays | None = None,
                  label: str = "FP16") -> dict[str, TaskResult]:
    """The recognised task check of every output (see `task_for_output`); outputs without one are left out.

    A check that cannot run on these outputs (a non-finite reference, a shape it cannot read) is left out
    too: a task check adds to the numbers, it never stops a diagnosis.
    """
    results = {}
    for name in ref_outputs:
        if name not in cand_outputs:
            continue
        task = task_for_output(index, name, np.shape(ref_outputs[name]), feed)
        if task is None:
            continue
        try:
            results[name] = task.check(feed or {}, ref_outputs, cand_outputs, label=label)
        except WorkbenchError:
            continue
    return results


def _final_producer(index, name: str):
    """(node, reshaped): the node that made `name`'s values, seen through Identity/Cast/Reshape."""
    node, reshaped = index.producer.get(name), False
    while node is not None and node.op_type in _PASS_THROUGH_OPS and node.input:
        reshaped = reshaped or node.op_type not in ("Identity", "Cast")
        node = index.producer.get(node.input[0])
    return node, reshaped


def _divides_by_norm(index, node) -> bool:
    """Div(x, norm) where norm comes (through Clip/Max/Expand/Add) from a square root of a sum of squares."""
    frontier, seen = [node.input[1]] if len(node.input) > 1 else [], set()
    while frontier and len(seen) < 16:
        producer = index.producer.get(frontier.pop())
        if producer is None or producer.name in seen:
            continue
        seen.add(producer.name)
        if producer.op_type in ("ReduceL2", "Sqrt"):
            return True
        if producer.op_type in ("Clip", "Max", "Expand", "Add", "Cast", "Identity", "Unsqueeze", "Reshape"):
            frontier += [i for i in producer.input[:1] if i]
    return False


def _mask_input(feed: Arrays | None, shape: tuple[int, ...]) -> str | None:
    for name, value in (feed or {}).items():
        if "mask" in name.lower() and np.shape(value) == tuple(shape[:2]):
            return name
    return None


def _opset(index) -> int:
    return next((o.version for o in index.opset_imports if o.domain in ("", "ai.onnx")), 13)


# ---------------------------------------------------------------- shared checks of the request


def _output_pair(output: str, reference: Arrays, candidate: Arrays, layout: str) -> tuple[np.ndarray, np.ndarray]:
    """The reference and candidate arrays of `output`, checked to be rank 3, same shape, finite reference."""
    for side, outputs in (("reference", reference), ("candidate", candidate)):
        if output not in outputs:
            raise WorkbenchError(f"output '{output}' is not in the {side} outputs (they are: {_names(outputs)}).")
    ref, cand = np.asarray(reference[output]), np.asarray(candidate[output])
    if ref.ndim != 3 or ref.dtype.kind != "f":
        raise WorkbenchError(f"output '{output}' must be a float tensor {layout}, "
                             f"got {ref.dtype} of shape {list(ref.shape)}.")
    if cand.shape != ref.shape or cand.dtype.kind != "f":
        raise WorkbenchError(f"candidate output '{output}' is {cand.dtype} of shape {list(cand.shape)}, "
                             f"the reference's is {ref.dtype} of shape {list(ref.shape)}.")
    if not np.isfinite(ref).all():
        raise WorkbenchError(f"the reference output '{output}' holds NaN or inf: a task check needs a finite FP32 run.")
    return ref, cand


def _feed_array(feed: Arrays, name: str, shape: tuple[int, ...], what: str) -> np.ndarray:
    if name not in feed:
        raise WorkbenchError(f"{what} '{name}' is not in the feed (it has: {_names(feed)}).")
    array = np.asarray(feed[name])
    if array.shape != shape:
        raise WorkbenchError(f"{what} '{name}' has shape {list(array.shape)}, expected [batch, sequence] = {list(shape)}.")
    return array


def _names(arrays: Arrays) -> str:
    return ", ".join(f"'{n}'" for n in arrays) or "nothing"


def _limited(lines: list[str]) -> list[str]:
    if len(lines) <= MAX_LINES:
        return lines
    return lines[:MAX_LINES] + [f"... and {len(lines) - MAX_LINES} more"]


def _json_value(value):
    if isinstance(value, (bool, np.bool_)) or value is None:
        return None if value is None else bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value
