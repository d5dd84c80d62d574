"""Which Vista Zoom Settings made a zoom node's images: read from the queued prompt's links.

A zoom stack's settings (p, levels) travel as one VISTA_ZOOM value from Vista Zoom Settings, but decoded images
carry nothing: a Vista Zoom Composite or Video wired to a second settings node would take another zoom factor
for the same images without a word. These nodes ask the host for the prompt and their own id (the V3 hidden
inputs PROMPT and UNIQUE_ID) and follow their ``images`` input upstream to the Vista Zoom Stack Sampler or
Composite that made them, whose ``zoom`` link names the stack's settings node. Only widget values written in the
prompt are compared (a value that is itself a link is not known here); a direct call without the hidden inputs
(scripts, node tests) checks nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..core.zoom.stack import ZoomSettings
from .notify import warn_user
from .zoom_sampling import SETTINGS_NODE

SETTINGS_CLASS = "VistaZoomSettings"
MAKERS = ("VistaZoomStackSampler", "VistaZoomComposite")  # nodes whose zoom input fixes the images' settings
COMPOSITE_CLASS = "VistaZoomComposite"


@dataclass(frozen=True)
class Maker:
    """A node upstream of ``images`` that made them with a zoom: its id, class and the ids of its inputs' links."""

    node_id: str
    class_type: str
    inputs: dict


def is_link(value) -> bool:
    """An API-format input value that is a link ``[node id, output index]``."""
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def makers(prompt: dict, node_id: str, name: str = "images") -> list[Maker]:
    """The zoom stack samplers and composites that input ``name`` of ``node_id`` depends on, nearest first.

    The walk stops at each of them (what lies above a maker, e.g. a photo taken from another stack, is that
    maker's business), and follows every link of any other node.
    """
    start = prompt[node_id]["inputs"].get(name)
    queue, seen, found = [start[0]] if is_link(start) else [], set(), []
    while queue:
        current = queue.pop(0)
        if current in seen or current not in prompt:
            continue
        seen.add(current)
        node = prompt[current]
        inputs = node.get("inputs", {})
        if node.get("class_type") in MAKERS:
            found.append(Maker(current, node["class_type"], inputs))
            continue
        queue += [value[0] for value in inputs.values() if is_link(value)]
    return found


def settings_values(prompt: dict, settings_id: str) -> tuple[int, int] | None:
    """``(p, levels)`` written on the Vista Zoom Settings node ``settings_id``; None when not literal there."""
    node = prompt.get(settings_id, {})
    values = node.get("inputs", {})
    p, levels = values.get("zoom_factor"), values.get("levels")
    if node.get("class_type") != SETTINGS_CLASS or is_link(p) or is_link(levels):
        return None
    try:
        return int(p), int(levels)
    except (TypeError, ValueError):
        return None


def check_stack_settings(node: str, hidden, zoom: ZoomSettings, feather: int | None = None) -> None:
    """Refuse images made with other zoom settings than ``zoom``; warn when a composite feathered them differently.

    Args:
        node: display name of the checking node.
        hidden: the node's ``cls.hidden`` (PROMPT and UNIQUE_ID), or None on a direct call (nothing is checked).
        zoom: the settings on this node's ``zoom`` input.
        feather: this node's feather (Vista Zoom Video), compared with an upstream Vista Zoom Composite's.
    """
    prompt, me = getattr(hidden, "prompt", None), getattr(hidden, "unique_id", None)
    if not prompt or me not in prompt:
        return
    own = prompt[me]["inputs"].get("zoom")
    own_id = own[0] if is_link(own) else None
    for maker in makers(prompt, me):
        link = maker.inputs.get("zoom")
        source = link[0] if is_link(link) else None
        values = None if source in (None, own_id) else settings_values(prompt, source)
        if values is not None and values != (zoom.p, zoom.levels):
            raise ValueError(f"{node}: zoom is zoom_factor={zoom.p}, levels={zoom.levels} ({SETTINGS_NODE} node "
                             f"#{own_id}) but the images were made with zoom_factor={values[0]}, levels={values[1]} "
                             f"({SETTINGS_NODE} node #{source}, via node #{maker.node_id}); link that same "
                             f"{SETTINGS_NODE} node to this node's zoom input")
        theirs = maker.inputs.get("feather")
        if feather is not None and maker.class_type == COMPOSITE_CLASS and isinstance(theirs, int) and theirs != feather:
            warn_user(node, f"{node}: feather={feather} px but the images were composited with feather={theirs} px "
                            f"(Vista Zoom Composite node #{maker.node_id}); use the same value on both so the video's "
                            f"fade ring is the composite's cross-fade ring")
