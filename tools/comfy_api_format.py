"""UI-format ComfyUI workflows (what the frontend saves) -> the API prompt ``POST /prompt`` takes.

Shared by tools/run_workflow.py and the e2e tier (tests/host/comfy_server.py puts tools/ on its path);
it imports nothing from ComfyUI and needs only the server's ``GET /object_info`` answer.

The frontend's rules that matter here: frontend-only nodes (Note, PrimitiveNode, Reroute) are never
sent; muted nodes (mode 2) are dropped together with the links out of them; a bypassed node (mode 4)
is dropped and each link out of it is rewired to the node's input of the same type (the origin slot
first, then the inputs in order), as the frontend does; widget values are stored in
``widgets_values`` in input order (required, then optional), with one extra saved value behind
'control after generate' inputs (seed, noise_seed, ...) and behind upload combos (LoadImage's
"image" button), neither of which is sent.
"""
from __future__ import annotations

__all__ = ["ConversionError", "UnknownNodeTypes", "FRONTEND_ONLY", "combo_options", "is_ui_format",
           "ordered_inputs", "is_widget", "has_control_widget", "has_upload_widget", "ui_to_api", "to_api",
           "unknown_node_types"]

# Nodes that exist only in the frontend: never sent to /prompt.
FRONTEND_ONLY = {"Note", "MarkdownNote", "PrimitiveNode", "Reroute"}
# Input types the frontend draws as widgets (their values are in widgets_values, in input order).
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
# The extra widget the frontend adds after seed-like inputs; its value is saved, never sent.
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
SEED_NAMES = {"seed", "noise_seed"}
# COMBO flags for which the frontend adds an upload button widget whose value ("image") is saved too.
UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload")
MUTED, BYPASSED = 2, 4


class ConversionError(ValueError):
    """The workflow cannot be turned into an API prompt (unsupported feature or broken graph)."""


class UnknownNodeTypes(KeyError):
    """The workflow uses node types that ``/object_info`` does not list; ``missing`` = [(id, title, type)]."""

    def __init__(self, missing: list[tuple[str, str, str]]):
        self.missing = missing
        names = ", ".join(f"node {node_id} ({kind!r})" for node_id, _, kind in missing)
        super().__init__(f"not in /object_info (did its pack fail to import?): {names}")


def _options(spec) -> dict:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def ordered_inputs(info: dict):
    """(name, spec) of the required then optional inputs, in /object_info order (hidden skipped)."""
    order = info.get("input_order") or {}
    for section in ("required", "optional"):
        specs = info.get("input", {}).get(section) or {}
        for name in order.get(section) or list(specs):
            if name in specs:
                yield name, specs[name]


def is_widget(spec) -> bool:
    """True for an input the frontend draws as a widget (not forced to be a socket)."""
    if _options(spec).get("forceInput"):
        return False
    return isinstance(spec[0], list) or spec[0] in WIDGET_TYPES


def has_control_widget(name: str, spec) -> bool:
    """True where the frontend adds a 'control after generate' widget behind this input.

    V1 nodes flag it ``"control_after_generate": True``; V3 nodes (v0.33.0) may give the
    default mode as a string ("randomize", ...) instead, so any truthy value counts. The
    frontend also adds it to INT inputs named seed/noise_seed.
    """
    flag = _options(spec).get("control_after_generate")
    return bool(flag) or (flag is None and spec[0] == "INT" and name in SEED_NAMES)


def has_upload_widget(spec) -> bool:
    """True for a COMBO the frontend draws with an upload button (its value is saved after the combo's)."""
    return any(_options(spec).get(flag) for flag in UPLOAD_FLAGS)


def combo_options(spec) -> list | None:
    """The options of a COMBO input spec (V1: a list as the type; V3 on v0.33.0: "COMBO" + {"options": [...]})."""
    if spec is None:
        return None
    if isinstance(spec[0], list):
        return spec[0]
    return _options(spec).get("options") if spec[0] == "COMBO" else None


def is_ui_format(workflow: dict) -> bool:
    """True for the frontend's saved graph (``nodes`` + ``links``), False for an API prompt."""
    return isinstance(workflow.get("nodes"), list)


def unknown_node_types(workflow: dict, object_info: dict) -> list[tuple[str, str, str]]:
    """[(node id, title, class type)] of the nodes whose type the server does not know (either format)."""
    if is_ui_format(workflow):
        nodes = [(str(n["id"]), n.get("title") or n["type"], n["type"]) for n in workflow["nodes"]
                 if n["type"] not in FRONTEND_ONLY and n.get("mode", 0) not in (MUTED, BYPASSED)]
    else:
        nodes = [(str(k), (v.get("_meta") or {}).get("title") or v.get("class_type"), v.get("class_type"))
                 for k, v in workflow.items()]
    return [(node_id, title, kind) for node_id, title, kind in nodes if kind not in object_info]


def _bypass_source(node: dict, slot: int, link_type: str):
    """The input link a bypassed node passes through to its output ``slot``: the input at the same
    index if its type matches, else the first input of that type (the frontend's rule); None if none."""
    inputs = node.get("inputs") or []
    for index in [slot, *range(len(inputs))]:
        if index < len(inputs) and inputs[index].get("type") == link_type:
            return inputs[index].get("link")
    return None


def _resolve_link(link_id, nodes: dict, links: dict):
    """``[src_node_id, src_slot]`` for a link, through Reroutes and bypassed nodes; None where the
    frontend sends no link (a PrimitiveNode source, whose value is in the target's widgets_values,
    a muted source, or a bypassed node without a matching input)."""
    while link_id is not None:
        if link_id not in links:
            raise ConversionError(f"link {link_id} is used by a node but missing from the workflow's links")
        _, src, src_slot, _, _, link_type = links[link_id][:6]
        node = nodes[src]
        if node["type"] == "Reroute":
            link_id = node["inputs"][0].get("link")
        elif node.get("mode", 0) == BYPASSED:
            link_id = _bypass_source(node, src_slot, link_type)
        elif node["type"] == "PrimitiveNode" or node.get("mode", 0) == MUTED:
            return None
        else:
            return [str(src), src_slot]
    return None


def _widget_inputs(node: dict, info: dict) -> dict:
    """{input name: saved widget value} of one UI node, following the frontend's widget order."""
    values = node.get("widgets_values") or []
    if isinstance(values, dict):  # some nodes save their widgets by name
        return {name: values[name] for name, spec in ordered_inputs(info)
                if is_widget(spec) and values.get(name) is not None}
    position, inputs = 0, {}
    for name, spec in ordered_inputs(info):
        if not is_widget(spec) or position >= len(values):
            continue
        value = values[position]
        position += 1
        if has_control_widget(name, spec) and position < len(values) and values[position] in CONTROL_VALUES:
            position += 1
        elif has_upload_widget(spec) and position < len(values):
            position += 1
        if value is not None:
            inputs[name] = value
    return inputs


def ui_to_api(ui: dict, object_info: dict) -> dict:
    """Convert a UI-format graph (as the frontend saves it) to the API prompt ``/prompt`` takes.

    Frontend-only, muted and bypassed nodes are dropped (links through bypassed nodes are rewired);
    widget values are assigned to the widget inputs in /object_info order (inputs whose type is a
    connection type are not widgets), skipping the saved 'control after generate' and upload-button
    values; a linked input becomes ``[src_node_id, src_slot]``. Each node keeps its title in
    ``_meta.title`` (the class type when it has none). Raises :class:`UnknownNodeTypes` for node
    types the server does not list and :class:`ConversionError` for subgraphs.
    """
    if (ui.get("definitions") or {}).get("subgraphs"):
        raise ConversionError("the workflow contains subgraphs, which this converter does not expand; "
                              "export it from the frontend in API format (Workflow > Export (API)) and run that file")
    missing = unknown_node_types(ui, object_info)
    if missing:
        raise UnknownNodeTypes(missing)
    nodes = {n["id"]: n for n in ui["nodes"]}
    links = {link[0]: link for link in ui.get("links", [])}
    prompt = {}
    for node in ui["nodes"]:
        kind = node["type"]
        if kind in FRONTEND_ONLY or node.get("mode", 0) in (MUTED, BYPASSED):
            continue
        info = object_info[kind]
        inputs, known = _widget_inputs(node, info), {name for name, _ in ordered_inputs(info)}
        for slot in node.get("inputs") or []:
            source = _resolve_link(slot.get("link"), nodes, links) if slot.get("name") in known else None
            if source is not None:
                inputs[slot["name"]] = source
        prompt[str(node["id"])] = {"class_type": kind, "inputs": inputs, "_meta": {"title": node.get("title") or kind}}
    return prompt


def to_api(workflow: dict, object_info: dict) -> dict:
    """An API prompt from either format: UI graphs are converted, API prompts are copied as they are."""
    if is_ui_format(workflow):
        return ui_to_api(workflow, object_info)
    if "prompt" in workflow and isinstance(workflow["prompt"], dict):  # a saved /prompt request body
        workflow = workflow["prompt"]
    if not all(isinstance(v, dict) and "class_type" in v for v in workflow.values()):
        raise ConversionError("not a ComfyUI workflow: expected the frontend's graph (with 'nodes' and 'links') "
                              "or an API prompt ({node id: {'class_type', 'inputs'}})")
    missing = unknown_node_types(workflow, object_info)
    if missing:
        raise UnknownNodeTypes(missing)
    return {str(k): {**v, "inputs": dict(v.get("inputs") or {})} for k, v in workflow.items()}
