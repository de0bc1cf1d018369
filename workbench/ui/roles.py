"""What each node is in a diagnosis, for badges and colours: a root, a harmless finding, a victim, or clean."""

from __future__ import annotations

from workbench.diagnosis.result import Diagnosis

ROOT, HARMLESS, VICTIM, OWN, CLEAN = "root", "harmless", "victim", "own", "clean"
COLOURS = {ROOT: "#cf222e", VICTIM: "#bf8700", OWN: "#e16f24", HARMLESS: "#8c959f", CLEAN: ""}
LABELS = {
    ROOT: "root cause",
    HARMLESS: "harmless finding",
    VICTIM: "victim: passes damage on (output wrong, own error fine)",
    OWN: "own error, not judged a root",
    CLEAN: "within tolerance",
}
SHORT = {ROOT: "root", HARMLESS: "harmless", VICTIM: "victim", OWN: "own error", CLEAN: ""}


def node_roles(diagnosis: Diagnosis) -> dict[str, str]:
    """Candidate node name -> role, in graph order.

    A victim's output is beyond tolerance while its own error (the node run in candidate precision
    on the reference's inputs) is within it or was never needed: it only carries damage made upstream.
    """
    roots = {f.node for f in diagnosis.roots}
    harmless = {f.node for f in diagnosis.warnings}
    roles = {}
    for comparison in diagnosis.nodes:
        worst, local = comparison.worst, comparison.local
        if comparison.node in roots:
            roles[comparison.node] = ROOT
        elif comparison.node in harmless:
            roles[comparison.node] = HARMLESS
        elif local is not None and not local.ok:
            roles[comparison.node] = OWN
        elif worst is not None and not worst.ok:
            roles[comparison.node] = VICTIM
        else:
            roles[comparison.node] = CLEAN
    return roles


def badge_html(role: str) -> str:
    """A small coloured label for a role ('' for a clean node)."""
    if role == CLEAN:
        return ""
    return (f"<span class='wb-badge wb-badge-{role}' title='{LABELS[role]}' style='background:{COLOURS[role]};"
            "color:#fff;border-radius:3px;padding:0 4px;font-size:0.8em'>" + SHORT[role] + "</span>")
