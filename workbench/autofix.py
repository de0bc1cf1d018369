"""Automatic fix: the smallest change found from the diagnosed roots, each attempt verified.

Blind search (onnxconverter-common's auto_convert_mixed_precision) bisects over all nodes
and runs the model at every step. Here each root already comes with its fixes, least FP32
first (a constant rewrite keeps every node FP16; a region kept in FP32 ends where the values
fit FP16 again). Each attempt applies one fix per root and re-verifies; a root that is still
there gets its next fix, a new root (say, an overflow moved past a kept node) gets its first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tqdm.auto import tqdm

from workbench.diagnose import diagnose
from workbench.errors import WorkbenchError
from workbench.fixes import Fix, KeepFp32
from workbench.report import Diagnosis, Finding
from workbench.verify import Attempt, Verification, apply_fixes

MAX_ATTEMPTS = 8


@dataclass
class _Plan:
    """Which fix is in force for each root, and which proposal comes next."""

    chosen: dict[str, Fix] = field(default_factory=dict)  # root node -> fix in force
    next_choice: dict[str, int] = field(default_factory=dict)  # root node -> index of the next proposal
    proposals: dict[str, tuple[Fix, ...]] = field(default_factory=dict)

    def fixes(self) -> tuple[Fix, ...]:
        """The chosen fixes, without one whose FP32 nodes another keeps already.

        (Keeping `ln_pow` alone moves its overflow to the Cast after it; that new root's
        region includes `ln_pow`, so the first fix is no longer needed.)
        """
        chosen = list(dict.fromkeys(self.chosen.values()))
        kept = [set(fix.nodes) if isinstance(fix, KeepFp32) else None for fix in chosen]
        return tuple(
            fix for i, fix in enumerate(chosen)
            if kept[i] is None or not any(j != i and other is not None and kept[i] < other for j, other in enumerate(kept))
        )

    def advance(self, roots: list[Finding]) -> bool:
        """Choose a (next) fix for every root; False when no root has a fix left to try."""
        moved = False
        for root in roots:
            self.proposals.setdefault(root.node, root.fixes)
            options = self.proposals[root.node]
            index = self.next_choice.get(root.node, 0)
            if index < len(options):
                self.chosen[root.node] = options[index]
                self.next_choice[root.node] = index + 1
                moved = True
        return moved


def auto_fix(
    source,
    inputs=None,
    options=None,
    fixes: tuple[Fix, ...] = (),
    max_attempts: int = MAX_ATTEMPTS,
    progress: bool = False,
    **overrides,
) -> Verification:
    """Fix the FP16 variant of `source` (a model, or a Diagnosis already made) until its outputs match.

    `fixes`: the user's own, always kept; the search adds to them. Returns the last
    Verification: `.ok`, `.fixes`, `.kept_fp32`, `.runs` (model forward passes, the first
    diagnosis included) and `.attempts` (every try, failed ones too).
    """
    before = source if isinstance(source, Diagnosis) else diagnose(source, inputs=inputs, options=options, progress=progress, **overrides)
    plan, attempts = _Plan(), []
    result = apply_fixes(before, fixes) if fixes else Verification(before, before, (), before.stats.get("forward_passes", 0))
    runs, current = result.runs, result.after
    bar = tqdm(total=max_attempts, desc="automatic fix", unit="attempt", leave=False, disable=not progress)
    while current.verdict != "ok" and len(attempts) < max_attempts and plan.advance(_to_fix(current)):
        trial = tuple(fixes) + plan.fixes()
        try:
            result = apply_fixes(before, trial, runs_so_far=runs)
        except WorkbenchError as exc:  # the variant did not convert or run: a failed attempt, try the next fixes
            runs += 1
            attempts.append(Attempt(trial, "failed", float("inf"), str(exc)))
            bar.update()
            continue
        runs = result.runs
        current = result.after
        attempts.append(Attempt(trial, current.verdict, _worst(current)))
        bar.update()
    bar.close()
    return Verification(result.before, result.after, result.fixes, runs, tuple(attempts))


def _to_fix(diagnosis: Diagnosis) -> list[Finding]:
    """The roots, or when no single node explains bad outputs, the largest local error."""
    if diagnosis.roots:
        return list(diagnosis.roots)
    return [w for w in diagnosis.warnings if w.fixes]


def _worst(diagnosis: Diagnosis) -> float:
    return max((float("inf") if d.nonfinite else d.rel_l2 for d in diagnosis.outputs.values()), default=0.0)
