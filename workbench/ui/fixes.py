"""Fixes: the proposed fixes as toggles, "Apply and re-verify" with progress, before and after, "Save fixed model"."""

from __future__ import annotations

import html
import inspect
import time
from pathlib import Path

import ipywidgets as widgets

import workbench
from workbench.diagnosis.result import Diagnosis
from workbench.errors import WorkbenchError
from workbench.ui.overview import prose_html, verdict_html
from workbench.ui.progress import without_tqdm
from workbench.ui.state import WorkbenchState


class FixesPanel:
    def __init__(self, diagnosis: Diagnosis, state: WorkbenchState):
        self.diagnosis, self.state = diagnosis, state
        self.toggles: list[tuple[widgets.Checkbox, object]] = []
        self.apply_button = widgets.Button(description="Apply and re-verify", button_style="primary", disabled=True)
        self.progress = widgets.IntProgress(value=0, min=0, max=100, layout=widgets.Layout(visibility="hidden"))
        self.progress.add_class("wb-progress")
        self.progress_note = widgets.HTML()
        self.result = widgets.HTML()
        self.save_path = widgets.Text(value=f"{diagnosis.reference.name}_fp16_fixed.onnx", description="Save as")
        self.save_button = widgets.Button(description="Save fixed model", disabled=True)
        self.saved = widgets.HTML()
        self.apply_button.on_click(lambda _: self.apply())
        self.save_button.on_click(lambda _: self.save())
        self.widget = widgets.VBox(self._rows())

    def _rows(self) -> list[widgets.Widget]:
        rows = [widgets.HTML("<p>Each fix changes the FP32 model, which is then converted to FP16 again and "
                             "re-verified against the same reference. The first fix of each root, the one that keeps "
                             "the least in FP32, is chosen.</p>")]
        for root in self.diagnosis.roots:
            rows.append(widgets.HTML(f"<h4>Root <code>{html.escape(root.node)}</code> ({html.escape(root.kind)})</h4>"))
            rows += [self._toggle_row(fix, chosen=i == 0) for i, fix in enumerate(root.fixes)]
        if not self.toggles:
            rows.append(widgets.HTML("<p>No fix to propose: there is no root cause with a known remedy.</p>"))
        self.apply_button.disabled = not self.toggles
        return rows + [widgets.HBox([self.apply_button, self.progress, self.progress_note]), self.result,
                       widgets.HBox([self.save_path, self.save_button]), self.saved]

    def _toggle_row(self, fix, chosen: bool) -> widgets.Widget:
        toggle = widgets.Checkbox(value=chosen, description=fix.name, indent=False)
        self.toggles.append((toggle, fix))
        # Fixes change the FP32 source before conversion, so that is what their preview reads.
        lines = [line for line in fix.preview(self.diagnosis.reference) if line.strip() != fix.description.strip()]
        preview = f"<ul class='wb-preview'>{''.join(f'<li>{prose_html(line)}</li>' for line in lines)}</ul>" if lines else ""
        return widgets.VBox([toggle, widgets.HTML(f"<div class='wb-fix-description'>{prose_html(fix.description)}</div>"
                                                  f"{preview}")])

    def chosen(self) -> list:
        return [fix for toggle, fix in self.toggles if toggle.value]

    def apply(self) -> None:
        fixes = self.chosen()
        if not fixes:
            self.result.value = "<p>Choose at least one fix.</p>"
            return
        self.apply_button.disabled = True
        self.progress.value, self.progress.layout.visibility = 0, "visible"
        self.progress_note.value = "re-verifying…"
        start = time.perf_counter()
        try:
            # No tqdm bar from the core: in a button callback it would land in JupyterLab's Log Console.
            verification = workbench.apply_fixes(without_tqdm(self.diagnosis), fixes, **self._progress_option())
            verification = verification.with_second_engine()  # issue 11: what the other engine says too
        except WorkbenchError as exc:
            self.result.value = f"<p><b>Could not apply:</b> {html.escape(str(exc))}</p>"
            self.progress.layout.visibility, self.progress_note.value = "hidden", ""
            return
        finally:
            self.apply_button.disabled = False
        self.progress.value = 100
        self.progress_note.value = f"re-verified in {time.perf_counter() - start:.1f} s"
        self.state.verification = verification
        self.result.value = verification_html(verification)
        self.save_button.disabled = False

    def _progress_option(self) -> dict:
        """Pass a progress callback where apply_fixes takes one; otherwise the bar only shows it is working."""
        if "progress" in inspect.signature(workbench.apply_fixes).parameters:
            return {"progress": self._on_progress}
        self.progress.value = 50
        return {}

    def _on_progress(self, done, total=None, *_) -> None:
        """Accepts progress(fraction) or progress(done, total)."""
        fraction = done / total if total else float(done)
        self.progress.value = int(round(100 * min(max(fraction, 0.0), 1.0)))

    def save(self) -> None:
        verification = self.state.verification
        if verification is None or not self.save_path.value.strip():
            self.saved.value = "<p>Apply a fix and give a path first.</p>"
            return
        try:
            path = verification.save(Path(self.save_path.value.strip()).expanduser())
        except WorkbenchError as exc:
            self.saved.value = f"<p><b>Not saved:</b> {html.escape(str(exc))}</p>"
            return
        where = Path(path or self.save_path.value.strip()).expanduser().resolve()
        self.saved.value = (f"<p class='wb-saved'>Saved <code>{html.escape(where.name)}</code> in "
                            f"<code>{html.escape(str(where.parent))}</code> (<code>{html.escape(str(where))}</code>).</p>")


def verification_html(verification) -> str:
    """Before and after: the verdicts side by side, then the numbers of each output and what the fixes cost."""
    return (
        "<table class='wb-compare'><tr><th>before</th><th>after</th></tr>"
        f"<tr><td>{verdict_html(verification.before, timing=False)}</td>"
        f"<td class='wb-after'>{verdict_html(verification.after, timing=False)}</td></tr>"
        f"</table>{numbers_html(verification)}{engines_html(verification)}"
    )


def engines_html(verification) -> str:
    """Each engine's verdict on the fixed model, and in words when they disagree."""
    rows = "".join(
        f"<tr><td><code>{html.escape(name)}</code></td><td>{html.escape(entry.verdict)}</td>"
        f"<td>{_figure(entry)}</td></tr>"
        for name, entry in verification.verified_by.items()
    )
    disagreement = verification.disagreement
    note = f"<p class='wb-disagree'><b>{html.escape(disagreement[0].upper() + disagreement[1:])}.</b></p>" if disagreement else ""
    return ("<table class='wb-table wb-engines'><tr><th>engine</th><th>verdict</th><th>worst rel-L2</th></tr>"
            f"{rows}</table>{note}")


def _figure(entry) -> str:
    if entry.reason is not None:
        return html.escape(entry.reason)
    return "non-finite" if entry.worst_rel_l2 == float("inf") else f"{entry.worst_rel_l2:.3g}"


def numbers_html(verification) -> str:
    tolerance_word = {True: "yes", False: "<b>no</b>"}
    rows = "".join(
        f"<tr><td><code>{html.escape(name)}</code></td><td>{verification.before.outputs[name].rel_l2:.3g}</td>"
        f"<td>{after.rel_l2:.3g}</td><td>{verification.before.outputs[name].nonfinite}</td><td>{after.nonfinite}</td>"
        f"<td>{tolerance_word[after.ok]}</td></tr>"
        for name, after in verification.after.outputs.items()
    )
    applied = "".join(f"<li><code>{html.escape(f.name)}</code>: {prose_html(f.description)}</li>" for f in verification.fixes)
    kept = ", ".join(f"<code>{html.escape(n)}</code>" for n in verification.kept_fp32) or "none"
    left = "".join(f"<li>still a root: {prose_html(f.explanation)}</li>" for f in verification.after.roots)
    return (
        "<table class='wb-table wb-numbers'><tr><th>output</th><th>rel-L2 before</th><th>rel-L2 after</th>"
        f"<th>non-finite before</th><th>non-finite after</th><th>within tolerance after</th></tr>{rows}</table>"
        f"<ul>{applied}<li>nodes kept in FP32: {kept}; constants changed: {len(verification.clamped)}; "
        f"{verification.fp16_weight_fraction:.1%} of float weights in FP16; {verification.runs} model runs</li>{left}</ul>"
    )
