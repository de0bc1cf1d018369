"""The one object the panels share: which node is selected, and the latest fix verification."""

from __future__ import annotations

import traitlets


class WorkbenchState(traitlets.HasTraits):
    node = traitlets.Unicode("", help="the selected candidate node ('' for none)")
    verification = traitlets.Any(None, allow_none=True, help="the latest workbench Verification, once fixes are applied")
