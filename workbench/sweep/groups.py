"""Which inputs to diagnose, and the roots grouped across inputs with what their inputs share.

A failure pattern is what can be told without a diagnosis: the verdict, which outputs fail, whether the
task check fails, and the input's traits (a fully padded row, a sequence far longer than the sweep's
median, a value far beyond the others). The worst N failing inputs and the worst of each pattern are
diagnosed; every other failing input is attributed the roots found for its pattern.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

LONG_FACTOR = 2.0  # a sequence this many times the sweep's median length counts as long
OUTLIER_FACTOR = 10.0  # an input peak this many times the sweep's median peak counts as an outlier


@dataclass(frozen=True)
class RootGroup:
    """One root (node, kind) and the failing inputs it explains; node None: failing inputs with no root named."""

    node: str | None
    kind: str | None
    explanation: str
    inputs: tuple[str, ...]
    total: int  # inputs swept
    shared: str  # what these inputs share, e.g. "all with a fully padded row"; "" when nothing tells them apart
    diagnosed: tuple[str, ...]  # the inputs whose own diagnosis named it

    @property
    def fraction(self) -> float:
        return len(self.inputs) / max(self.total, 1)

    def line(self) -> str:
        head = f"root {self.node} ({self.kind})" if self.node else "no root named"
        text = f"{head}: {len(self.inputs):,} of {self.total:,} inputs ({100 * self.fraction:.1f}%)"
        return text + (f", {self.shared}" if self.shared else "")

    def to_dict(self) -> dict:
        return {"node": self.node, "kind": self.kind, "explanation": self.explanation, "count": len(self.inputs),
                "total": self.total, "fraction": self.fraction, "shared": self.shared, "inputs": list(self.inputs),
                "diagnosed": list(self.diagnosed), "line": self.line()}


def severity(record: dict) -> tuple:
    """Sort key, worst first: non-finite values, then relative L2 error (None is unbounded)."""
    worst = record["worst_rel_l2"]
    return (-record["nonfinite"], -(np.inf if worst is None else worst))


def patterns(records: list[dict]) -> dict[str, tuple]:
    """input id -> its failure pattern, for failing inputs."""
    lengths = [r["traits"]["sequence"] for r in records if r["traits"].get("sequence")]
    peaks = [r["traits"]["peak"] for r in records if r["traits"].get("peak")]
    median_length = float(np.median(lengths)) if lengths else None
    median_peak = float(np.median(peaks)) if peaks else None
    result = {}
    for r in records:
        if not r["failed"]:
            continue
        t = r["traits"]
        long = bool(median_length and t.get("sequence") and t["sequence"] >= LONG_FACTOR * median_length)
        outlier = bool(median_peak and t.get("peak") and t["peak"] >= OUTLIER_FACTOR * median_peak)
        failing = tuple(sorted(n for n, o in r["outputs"].items() if not o["ok"]))
        task_failed = bool(r["task"] and r["task"].get("ok") is False)
        result[r["id"]] = (r["verdict"], failing, task_failed, bool(t.get("fully_padded_row")), long, outlier)
    return result


def to_diagnose(records: list[dict], top: int) -> list[str]:
    """The worst `top` failing inputs, then the worst input of each pattern not yet among them."""
    by_pattern = patterns(records)
    failing = sorted((r for r in records if r["failed"]), key=severity)
    chosen = [r["id"] for r in failing[:top]]
    covered = {by_pattern[i] for i in chosen}
    for r in failing:
        if by_pattern[r["id"]] not in covered:
            chosen.append(r["id"])
            covered.add(by_pattern[r["id"]])
    return chosen


def group_roots(records: list[dict], diagnoses: dict[str, dict]) -> tuple[RootGroup, ...]:
    """Roots across inputs, the most frequent first. `diagnoses`: input id -> Diagnosis.to_dict()."""
    by_pattern = patterns(records)
    pattern_roots: dict[tuple, dict] = defaultdict(dict)
    for input_id, diagnosis in diagnoses.items():
        if input_id in by_pattern:
            for root in diagnosis["roots"]:
                pattern_roots[by_pattern[input_id]][(root["node"], root["kind"])] = root["explanation"]
    members: dict[tuple, list[str]] = defaultdict(list)
    explanations: dict[tuple, str] = {}
    for input_id, pattern in by_pattern.items():
        if input_id in diagnoses:
            roots = {(r["node"], r["kind"]): r["explanation"] for r in diagnoses[input_id]["roots"]}
        else:
            roots = pattern_roots.get(pattern, {})
        for key, explanation in (roots or {(None, None): ""}).items():
            members[key].append(input_id)
            explanations.setdefault(key, explanation)
    total = len(records)
    groups = []
    for key, ids in members.items():
        diagnosed = tuple(i for i in ids if i in diagnoses and any((r["node"], r["kind"]) == key for r in diagnoses[i]["roots"]))
        groups.append(RootGroup(key[0], key[1], explanations[key], tuple(ids), total, shared_traits(ids, records), diagnosed))
    return tuple(sorted(groups, key=lambda g: (g.node is None, -len(g.inputs), g.node or "")))


def shared_traits(ids: list[str], records: list[dict]) -> str:
    """What all of `ids` have in common that sets them apart from the other inputs, in words."""
    members = set(ids)
    inside = [r["traits"] for r in records if r["id"] in members]
    outside = [r["traits"] for r in records if r["id"] not in members]
    parts = []
    if all(t.get("fully_padded_row") for t in inside) and not all(t.get("fully_padded_row") for t in outside or [{}]):
        parts.append("a fully padded row")
    parts += _separated(inside, outside, "sequence", "sequences of {low:,} positions or more (the others at most {high:,})")
    parts += _separated(inside, outside, "peak", "an input value of magnitude {low:.3g} or more (the others at most {high:.3g})")
    return ("all with " + " and ".join(parts)) if parts else ""


def _separated(inside: list[dict], outside: list[dict], trait: str, template: str) -> list[str]:
    low = [t[trait] for t in inside if t.get(trait) is not None]
    high = [t[trait] for t in outside if t.get(trait) is not None]
    if not low or len(low) < len(inside) or not high or min(low) <= max(high):
        return []
    return [template.format(low=min(low), high=max(high))]
