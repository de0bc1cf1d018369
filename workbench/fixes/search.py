"""Automatic fix: the smallest change found from the diagnosed roots, each attempt verified.

Blind search (onnxconverter-common's auto_convert_mixed_precision) bisects over all nodes
and runs the model at every step. Here each root already comes with its fixes, least FP32
first (a constant rewrite or a fold keeps every node FP16; a region kept in FP32 starts where
a value is lost when stored and ends where the values fit FP16 again). Each attempt applies
one fix per root and re-verifies; a root that is still there gets its next fix, a new root
(say, an overflow moved past a kept node) gets its first. When no root has a fix left, the
kept region grows by one node at a time (backward first: the value a kept node reads may be
rounded where it is stored), and when that verifies, nodes added together are dropped again
one by one while verification holds. The search stops when the outputs are right, when it
has no move left, or when its run budget is spent.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from tqdm.auto import tqdm

from workbench.diagnosis.result import Diagnosis, Finding
from workbench.diagnosis.search import diagnose
from workbench.errors import WorkbenchError
from workbench.fixes.catalogue import Fix, KeepFp32, stored_loss
from workbench.fixes.verify import Attempt, Verification, apply_fixes, worst_rel_l2
from workbench.ir.graph import GraphIndex

# Model forward passes (full or partial) one automatic fix may spend, the first diagnosis included.
# Generous: a verification costs 1 pass plus one per suspect still found, so this is dozens of attempts.
RUN_BUDGET = 200
GROWN_REASON = "grown by the automatic fix: the values these nodes pass on are rounded where they are stored"


@dataclass
class _Plan:
    """Which fix is in force for each root, which proposal comes next, and the grown region."""

    chosen: dict[str, Fix] = field(default_factory=dict)  # root node -> fix in force
    next_choice: dict[str, int] = field(default_factory=dict)  # root node -> index of the next proposal
    proposals: dict[str, tuple[Fix, ...]] = field(default_factory=dict)
    grown: tuple[str, ...] = ()  # nodes the search added to the kept region, in the order added
    last_growth: tuple[str, ...] = ()

    def fixes(self) -> tuple[Fix, ...]:
        """The chosen fixes (and the grown region), without one whose FP32 nodes another keeps already.

        (Keeping `ln_pow` alone moves its overflow to the Cast after it; that new root's
        region includes `ln_pow`, so the first fix is no longer needed.)
        """
        chosen = list(dict.fromkeys(self.chosen.values()))
        if self.grown:
            chosen.append(KeepFp32(self.grown, GROWN_REASON))
        kept = [set(fix.nodes) if isinstance(fix, KeepFp32) else None for fix in chosen]
        return tuple(
            fix for i, fix in enumerate(chosen)
            if kept[i] is None or not any(_covers(other, kept[i], j < i) for j, other in enumerate(kept) if j != i)
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

    def grow(self, index: GraphIndex, seeds: set[str]) -> bool:
        """Add one layer of nodes to the kept region: producers of what it reads, else readers of
        what it writes. False when the region cannot grow."""
        region = seeds | set(self.kept_nodes()) | set(self.grown)
        region &= set(index.node_by_name)
        if not region:
            return False
        added = _producers_of_inputs(index, region) or _readers_of_outputs(index, region)
        if not added:
            return False
        self.last_growth = tuple(added)
        self.grown += self.last_growth
        return True

    def kept_nodes(self) -> list[str]:
        return [n for fix in self.chosen.values() if isinstance(fix, KeepFp32) for n in fix.nodes]


@dataclass
class _Search:
    before: Diagnosis
    user_fixes: tuple[Fix, ...]
    budget: int
    max_attempts: int | None
    bar: object
    runs: int = 0
    attempts: list[Attempt] = field(default_factory=list)
    tried: set = field(default_factory=set)
    verified: list[Verification] = field(default_factory=list)

    def has_room(self) -> bool:
        return self.runs < self.budget and (self.max_attempts is None or len(self.attempts) < self.max_attempts)

    def stop_reason(self, result: Verification) -> str:
        if result.ok:
            return "fixed"
        if self.runs >= self.budget:
            return "budget spent"
        if self.max_attempts is not None and len(self.attempts) >= self.max_attempts:
            return "attempts spent"
        return "no move left"

    def attempt(self, fixes: tuple[Fix, ...], move: str) -> Verification | None:
        """Apply and verify `fixes`; None when the variant did not convert or run (a failed attempt)."""
        self.tried.add(fixes)
        try:
            result = apply_fixes(self.before, fixes, runs_so_far=self.runs)
        except WorkbenchError as exc:  # the variant did not convert or run: a failed attempt, try the next move
            self.runs += 1
            self.attempts.append(Attempt(fixes, "failed", float("inf"), str(exc), runs=self.runs, move=move))
            self.bar.update()
            return None
        self.runs = result.runs
        self.attempts.append(
            Attempt(fixes, result.after.verdict, worst_rel_l2(result.after.outputs), runs=self.runs, move=move,
                    kept_fp32=len(result.kept_fp32), fp16_weight_fraction=result.fp16_weight_fraction)
        )
        if result.ok:
            self.verified.append(result)
        self.bar.update()
        return result


def auto_fix(
    source,
    inputs=None,
    options=None,
    fixes: tuple[Fix, ...] = (),
    max_attempts: int | None = None,
    progress: bool = False,
    budget: int = RUN_BUDGET,
    second_engine: bool = True,
    **overrides,
) -> Verification:
    """Fix the FP16 variant of `source` (a model, or a Diagnosis already made) until its outputs match.

    `fixes`: the user's own, always kept; the search adds to them. `budget`: model runs the
    search may spend (the first diagnosis included); `max_attempts`: an optional cap on attempts.
    Returns the smallest verified Verification found, or the last one: `.ok`, `.fixes`,
    `.kept_fp32`, `.runs`, `.budget`, `.stopped` and `.attempts` (every try with its figures, failed
    ones too). `second_engine`: judge the result with the other engine too (`.verified_by`), one
    candidate pass not counted in `.runs`.
    """
    before = source if isinstance(source, Diagnosis) else diagnose(source, inputs=inputs, options=options, progress=progress, **overrides)
    fixes = tuple(fixes)
    bar = tqdm(desc="automatic fix", unit="attempt", leave=False, disable=not progress)
    search = _Search(before, fixes, budget, max_attempts, bar, runs=before.stats.get("forward_passes", 0))
    result = search.attempt(fixes, "user") if fixes else Verification(before, before, (), search.runs)
    if result is None:
        raise WorkbenchError(f"the fixes given do not make a model that runs: {search.attempts[-1].error}")
    plan, index = _Plan(), GraphIndex.of(before.reference)
    while not result.ok and search.has_room():
        trial = _next_trial(plan, result.after, index, fixes, search.tried)
        if trial is None:
            break  # no move left
        trial, move = trial
        result = search.attempt(trial, move) or result
    if result.ok and len(plan.last_growth) > 1:
        result = _shrink(search, plan, result)
    bar.close()
    best = min(search.verified, key=_size) if search.verified else result
    best = replace(best, runs=search.runs, attempts=tuple(search.attempts), budget=budget, stopped=search.stop_reason(best))
    return best.with_second_engine() if second_engine else best


def _next_trial(plan: _Plan, current: Diagnosis, index: GraphIndex, user: tuple[Fix, ...], tried: set):
    """The next set of fixes to verify and the kind of move, or None when there is none left."""
    roots = _to_fix(current)
    while plan.advance(roots):
        trial = user + plan.fixes()
        if trial not in tried:
            return trial, "proposal"
    seeds = {root.node for root in current.roots}
    while plan.grow(index, seeds):
        trial = user + plan.fixes()
        if trial not in tried:
            return trial, "growth"
    return None


def _shrink(search: _Search, plan: _Plan, result: Verification) -> Verification:
    """Drop the nodes added by the last growth step one by one while verification holds.

    A node that reads or writes a value FP16 storage loses (beyond ±65504, integers above
    2048, tiny values become 0) cannot be in FP16, so it is not tried.
    """
    values = search.before.reference_values
    index = GraphIndex.of(search.before.reference)
    for node in plan.last_growth:
        tensors = [t for t in list(index.node_by_name[node].input) + list(index.node_by_name[node].output) if t]
        if any(stored_loss(values.get(t), True) for t in tensors) or not search.has_room():
            continue
        smaller = tuple(n for n in plan.grown if n != node)
        trial_plan = replace(plan, grown=smaller)
        trial = search.user_fixes + trial_plan.fixes()
        if trial in search.tried:
            continue
        attempt = search.attempt(trial, "shrink")
        if attempt is not None and attempt.ok:
            plan.grown, result = smaller, attempt
    return result


def _covers(other: set | None, nodes: set, earlier: bool) -> bool:
    """Whether another kept region makes this one redundant (an equal one counts once, the earlier)."""
    return other is not None and (nodes < other or (earlier and nodes == other))


def _producers_of_inputs(index: GraphIndex, region: set[str]) -> list[str]:
    found = []
    for name in (n for n in index.nodes if n.name in region):
        for tensor in name.input:
            producer = index.producer.get(tensor)
            if (
                producer is not None and producer.name not in region and producer.name not in found
                and index.is_float(tensor) and not index.produces_constants(producer)
            ):
                found.append(producer.name)
    return found


def _readers_of_outputs(index: GraphIndex, region: set[str]) -> list[str]:
    found = []
    for node in (n for n in index.nodes if n.name in region):
        for tensor in node.output:
            for reader in index.consumers.get(tensor, []):
                if reader.name not in region and reader.name not in found and index.is_float(tensor):
                    found.append(reader.name)
    return found


def _size(result: Verification) -> tuple:
    """Smaller is better: fewer nodes computing in FP32, more weights in FP16, fewer constants changed."""
    return (len(result.kept_fp32), -result.fp16_weight_fraction, len(result.clamped))


def _to_fix(diagnosis: Diagnosis) -> list[Finding]:
    """The roots, or when no single node explains bad outputs, the largest local error."""
    if diagnosis.roots:
        return list(diagnosis.roots)
    return [w for w in diagnosis.warnings if w.fixes]

