"""Progress while the Workbench diagnoses, leaving nothing behind in the notebook.

tqdm's notebook bars are widgets: closed, they stay in the cell's saved output and read "Error
displaying widget: model not found" after a reload; outside a cell (a button callback) they land in
JupyterLab's Log Console. So the Workbench asks the core for no tqdm bar and shows an HTML
`<progress>` element (no widget model behind it) under a display id, which it blanks when done.
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
from typing import Callable

from workbench.diagnosis.result import Diagnosis

DisplayFunction = Callable[..., object]


def _kernel_display() -> DisplayFunction | None:
    """IPython's display when running in a kernel (a notebook); None in a script or a test."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return None
    shell = get_ipython()
    return display if shell is not None and getattr(shell, "kernel", None) is not None else None


@contextlib.contextmanager
def busy_note(text: str, display: DisplayFunction | None = None):
    """Show `text` with an indeterminate progress bar while the block runs, then blank it."""
    display = display or _kernel_display()
    if display is None:
        yield
        return
    handle = display(_Html(f"<progress class='wb-busy'></progress> {html.escape(text)}", text),
                     display_id=True)
    try:
        yield
    finally:
        handle.update(_Html("", ""))


def without_tqdm(diagnosis: Diagnosis) -> Diagnosis:
    """The same diagnosis with tqdm bars off, for re-verifications started from a button (no cell to show them)."""
    options = diagnosis.options
    if options is None or not getattr(options, "progress", False):
        return diagnosis
    return dataclasses.replace(diagnosis, options=dataclasses.replace(options, progress=False))


class _Html:
    """A display object with HTML and a plain-text fallback, and no widget."""

    def __init__(self, markup: str, text: str):
        self.markup, self.text = markup, text

    def _repr_mimebundle_(self, include=None, exclude=None):
        return {"text/html": self.markup, "text/plain": self.text}
