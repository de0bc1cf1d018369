"""The outcome of a sweep: one record per input, the diagnosed inputs, and the roots grouped across inputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.sweep.groups import RootGroup, severity


@dataclass(frozen=True)
class SweepResult:
    reference: Any = field(repr=False)  # workbench Model
    candidate: Any = field(repr=False)
    source: Any = field(repr=False)  # workbench.sweep.sources.Source, to load an input again
    records: tuple[dict, ...]  # in the source's order; see runner.evaluate for the fields
    skipped: tuple[tuple[str, str], ...]  # (input id, why)
    groups: tuple[RootGroup, ...]
    diagnoses: dict[str, dict]  # input id -> Diagnosis.to_dict() of the inputs diagnosed
    tolerance: float  # relative L2 allowed per output
    work_file: Path | None
    stats: dict  # seconds (all in), run_seconds (the per-input phase), diagnose_seconds, inputs_per_second, computed (this run), reused (from the work folder), backend
    diagnose_options: Any = field(repr=False, default=None)

    @property
    def failures(self) -> tuple[dict, ...]:
        return tuple(r for r in self.records if r["failed"])

    def worst(self, count: int = 5) -> tuple[dict, ...]:
        return tuple(sorted(self.failures, key=severity)[:count])

    def record(self, input_id: str) -> dict:
        for r in self.records:
            if r["id"] == input_id:
                return r
        raise KeyError(input_id)

    def diagnose(self, input_id: str):
        """The full Diagnosis of one input (computed now: a Diagnosis holds every tensor of the run)."""
        from workbench.diagnosis.search import diagnose

        feed = self.source.feed(input_id)
        return diagnose(self.reference, self.candidate, inputs=feed, options=self.diagnose_options)

    def summary(self) -> str:
        total = len(self.records)
        lines = [f"sweep {self.candidate.name} against {self.reference.name} over {self.source.description}: "
                 f"{len(self.failures):,} of {total:,} inputs fail ({100 * len(self.failures) / max(total, 1):.1f}%)"
                 + (f", {len(self.skipped)} skipped" if self.skipped else "")]
        lines += [f"  {group.line()}" for group in self.groups]
        for r in self.worst(5):
            worst = "inf" if r["worst_rel_l2"] is None else f"{r['worst_rel_l2']:.3g}"
            lines.append(f"  worst {r['id']}: {r['verdict']}, rel-L2 {worst}, non-finite {r['nonfinite']}")
        lines += [f"  skipped {input_id}: {why}" for input_id, why in self.skipped]
        lines.append(f"  {self.stats['computed']} computed, {self.stats['reused']} reused from {self.work_file}, "
                     f"{self.stats['inputs_per_second']:.1f} inputs/s ({self.stats['backend']})")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()

    def to_dict(self) -> dict:
        """JSON-safe; `stats` and `work_file` are the only parts that depend on how it ran."""
        return {
            "reference": self.reference.name,
            "candidate": self.candidate.name,
            "source": self.source.description,
            "inputs": len(self.records),
            "failed": len(self.failures),
            "tolerance": self.tolerance,
            "groups": [g.to_dict() for g in self.groups],
            "records": [{k: v for k, v in r.items() if k != "seconds"} for r in self.records],
            "skipped": [{"id": i, "problem": why} for i, why in self.skipped],
            "diagnoses": self.diagnoses,
            "stats": self.stats,
            "work_file": str(self.work_file) if self.work_file else None,
        }
