"""Which candidate tensor holds which reference tensor's value: by name, through the Casts a conversion inserts."""

from __future__ import annotations

from workbench.ir.graph import FLOAT_TYPES, GraphIndex


def align(reference: GraphIndex, candidate: GraphIndex) -> dict[str, str]:
    """Map each candidate tensor to the reference tensor holding the same value, by name.

    A name present in both aligns directly. The Casts a conversion inserts (at the model's
    inputs and outputs, around nodes kept in FP32) give new names to the same value: a
    float-to-float Cast's input and output align to the same reference tensor. Never by position.
    """
    known = set(reference.producer) | set(reference.initializers) | set(reference.input_names)
    candidate_names = set(candidate.producer) | set(candidate.initializers) | set(candidate.input_names)
    mapping = {name: name for name in candidate_names if name in known}
    value_casts = [
        (node.input[0], node.output[0])
        for node in candidate.nodes
        if node.op_type == "Cast" and candidate.elem_types.get(node.input[0]) in FLOAT_TYPES and _casts_to_float(node)
    ]
    changed = True
    while changed:
        changed = False
        for source, target in value_casts:
            if source in mapping and target not in mapping:
                mapping[target] = mapping[source]
                changed = True
            elif target in mapping and source not in mapping:
                mapping[source] = mapping[target]
                changed = True
    return mapping


def _casts_to_float(node) -> bool:
    return any(attr.name == "to" and attr.i in FLOAT_TYPES for attr in node.attribute)


# Ops whose output has the layout of their (broadcast) inputs: a Concat's parts stay where they were.
