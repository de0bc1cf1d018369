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
    with the reference's. The ranking needs at least 3 sentences (with 2 there is nothing to order);
    with fewer it is skipped, said so in the lines, and `rankings_equal` is None: it is not an error,
    since the cosine check alone is still meaningful.
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
        if ref_order != cand_order:
            changed.append(
                f"sentence {i}: ranking changed: FP32 orders the others {_order_text(ref_order, ref_sim[i])}, "
                f"{label} {_order_text(cand_order, cand_sim[i])}")
    if not changed:
        return True, [f"ranking unchanged: for each of the {sentences} sentences, the others come in the same order"]
    return False, _limited(changed)


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
