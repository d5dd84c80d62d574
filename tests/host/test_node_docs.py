"""Docs where users look: every Vista node documents itself, and the docs agree with the live schemas.

Host tier (``COMFYUI_PATH``): for EVERY node that ``VistaExtension.get_node_list()`` returns, read as the
frontend gets it (``GET_NODE_INFO_V1()``, what ``/object_info`` serves):

* a ``Vista/…`` category, a description, a tooltip on every input and every output;
* a page ``web/docs/<node id>.md`` — where both supported frontends' node-docs panel fetches it
  (``/extensions/<pack folder>/docs/<node id>.md``) — naming every input and output, with the paper, when to use it
  and a worked example that names every shipped workflow using the node; its generated inputs/outputs block
  equals what tools/node_reference.py renders from the live schema;
* README's "## Node reference" equals what tools/node_reference.py renders (no missing node, no stale entry);
* tools/draw_thumbnails.py reads workflow widgets in the order the schemas give;
* the host's own pyproject.toml parser reads the registry metadata.

The checks are functions returning the gaps they find; ``TestChecksTrip`` feeds them broken copies to show that
each one fails on a missing piece. The host-free tests at the end (packaging files) run without a host too.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

import comfy_server
from comfy_server import _has_control_widget, _is_widget, _ordered_inputs
from host import import_host

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "web" / "docs"
REQUIRED_SECTIONS = ("## Paper", "## When to use it", "## Worked example")


def _tool(name: str):
    module_name = f"vista_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, ROOT / "tools" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


reference = _tool("node_reference")
thumbnails = _tool("draw_thumbnails")


def workflow_nodes() -> dict[str, set[str]]:
    """``{workflow file name: node types in it}`` for every shipped workflow."""
    return {p.name: {n["type"] for n in json.loads(p.read_text(encoding="utf-8"))["nodes"]}
            for p in sorted((ROOT / "workflows").glob("*.json"))}


# --- the checks (each returns the gaps it finds) ----------------------------------------------------
def schema_gaps(info: dict) -> list[str]:
    node, out = info["name"], []
    if not str(info.get("category", "")).startswith("Vista/"):
        out.append(f"{node}: category {info.get('category')!r} is not under Vista/")
    if not str(info.get("description", "")).strip():
        out.append(f"{node}: no description")
    for name, spec, _ in reference.inputs(info):
        if not str(reference.options(spec).get("tooltip", "")).strip():
            out.append(f"{node}: input {name} has no tooltip")
    for name, _, tip in reference.outputs(info):
        if not tip.strip():
            out.append(f"{node}: output {name} has no tooltip")
    return out


def page_gaps(info: dict, text: str | None, workflows: dict[str, set[str]]) -> list[str]:
    node = info["name"]
    if text is None:
        return [f"{node}: web/docs/{node}.md is missing"]
    out = [f"{node}: the docs page does not mention input `{name}`"
           for name, _, _ in reference.inputs(info) if f"`{name}`" not in text]
    out += [f"{node}: the docs page does not mention output `{name}`"
            for name, _, _ in reference.outputs(info) if f"`{name}`" not in text]
    out += [f"{node}: the docs page has no '{section}' section" for section in REQUIRED_SECTIONS
            if not re.search(rf"^{re.escape(section)}\b", text, flags=re.M)]
    if not re.search(r"arXiv:\d{4}\.\d{4,5}", text):
        out.append(f"{node}: the docs page cites no arXiv id")
    using = sorted(name for name, types in workflows.items() if node in types)
    out += [f"{node}: the docs page does not name workflows/{name}, which uses the node"
            for name in using if f"workflows/{name}" not in text]
    out += [f"{node}: the docs page names workflows/{name}, which does not exist"
            for name in sorted(set(re.findall(r"workflows/([\w.-]+\.json)", text))) if name not in workflows]
    if not using:
        out.append(f"{node}: no shipped workflow uses the node, so the docs page has no worked example to point to")
    block = reference.find_block(text, node)
    if block is None:
        out.append(f"{node}: the docs page has no generated schema block (run tools/node_reference.py --write)")
    elif text[block[0]:block[1]] != reference.docs_block(info):
        out.append(f"{node}: the docs page's schema block disagrees with the live schema "
                   f"(run tools/node_reference.py --write)")
    return out


def readme_gaps(infos: list[dict], readme: str) -> list[str]:
    span = reference.find_section(readme)
    if span is None:
        return [f"README.md has no '{reference.SECTION_TITLE}' section"]
    section = readme[span[0]:span[1]]
    out = []
    listed = re.findall(r"^### `(\w+)`", section, flags=re.M)
    out += [f"README node reference lacks {info['name']}" for info in infos if info["name"] not in listed]
    out += [f"README node reference lists {name}, which is not a Vista node" for name in listed
            if name not in {info["name"] for info in infos}]
    if section.rstrip("\n") + "\n" != reference.readme_section(infos):
        out.append("README node reference disagrees with the live schemas (run tools/node_reference.py --write)")
    return out


def widget_order(info: dict) -> tuple[str, ...]:
    """Widget input names in the order the frontend saves ``widgets_values`` (control widgets included)."""
    out = []
    for name, spec in _ordered_inputs(info):
        if _is_widget(spec):
            out.append(name)
            if _has_control_widget(name, spec):
                out.append(thumbnails.CONTROL)
    return tuple(out)


# --- the live schemas -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def infos() -> list[dict]:
    import_host()
    from vista.nodes import VistaExtension

    nodes = comfy_server.run_coroutine(VistaExtension().get_node_list())
    return [cls.GET_NODE_INFO_V1() for cls in nodes]


def page_text(node_id: str) -> str | None:
    page = DOCS / f"{node_id}.md"
    return page.read_text(encoding="utf-8") if page.is_file() else None


class TestNodeDocs:
    def test_every_node_is_categorised_described_and_has_tooltips(self, infos):
        assert infos, "VistaExtension.get_node_list() returned no node"
        gaps = [gap for info in infos for gap in schema_gaps(info)]
        assert not gaps, "\n".join(gaps)

    def test_every_node_has_a_complete_docs_page(self, infos):
        workflows = workflow_nodes()
        gaps = [gap for info in infos for gap in page_gaps(info, page_text(info["name"]), workflows)]
        assert not gaps, "\n".join(gaps)

    def test_no_docs_page_without_a_node(self, infos):
        stale = sorted(p.name for p in DOCS.glob("*.md") if p.stem not in {info["name"] for info in infos})
        assert not stale, f"web/docs pages for no Vista node: {stale}"

    def test_readme_node_reference_matches_the_schemas(self, infos):
        gaps = readme_gaps(infos, (ROOT / "README.md").read_text(encoding="utf-8"))
        assert not gaps, "\n".join(gaps)

    def test_no_beta_badge(self, infos):
        """Issue [F] 4: every node's workflow passes e2e (panorama_flux's nodes run in other workflows too), so no
        node carries the frontend's BETA badge (is_experimental) or a DEPRECATED one."""
        flagged = [info["name"] for info in infos if info.get("experimental") or info.get("deprecated")]
        assert not flagged, f"nodes flagged experimental/deprecated: {flagged}"

    def test_node_ids_follow_the_naming_rule(self, infos):
        bad = [info["name"] for info in infos
               if not (info["name"].startswith("Vista") and info["display_name"].startswith("Vista "))]
        assert not bad, f"node id must be Vista<Thing> and display name 'Vista <Thing>': {bad}"


class TestChecksTrip:
    """Each check reports a gap when a piece is missing (broken copies of the real schemas and pages)."""

    def test_missing_tooltip_description_category(self, infos):
        info = copy.deepcopy(next(i for i in infos if i["name"] == "VistaTiledDiffusion"))
        info["input"]["required"]["stride_x"][1].pop("tooltip")
        info["output_tooltips"] = [""]
        info["description"] = ""
        info["category"] = "sampling"
        gaps = "\n".join(schema_gaps(info))
        for needle in ("input stride_x has no tooltip", "output MODEL has no tooltip", "no description", "not under Vista/"):
            assert needle in gaps

    def test_page_missing_an_input_a_section_or_a_workflow(self, infos):
        info = next(i for i in infos if i["name"] == "VistaTiledDiffusion")
        text = page_text(info["name"])
        workflows = workflow_nodes()
        assert page_gaps(info, text, workflows) == []
        assert page_gaps(info, None, workflows)
        broken = text.replace("`wrap_x`", "wrap").replace("## Worked example", "## Example")
        broken = broken.replace("workflows/panorama_360_wrap.json", "a workflow")
        gaps = "\n".join(page_gaps(info, broken, workflows))
        for needle in ("input `wrap_x`", "'## Worked example'", "panorama_360_wrap.json", "schema block disagrees"):
            assert needle in gaps

    def test_page_block_out_of_date_with_a_new_input(self, infos):
        info = copy.deepcopy(next(i for i in infos if i["name"] == "VistaMADAttention"))
        info["input"]["required"]["new_input"] = ["INT", {"default": 1, "tooltip": "t"}]
        info["input_order"]["required"].append("new_input")
        gaps = "\n".join(page_gaps(info, page_text("VistaMADAttention"), workflow_nodes()))
        assert "input `new_input`" in gaps and "schema block disagrees" in gaps

    def test_readme_missing_node_and_stale_entry(self, infos):
        readme = (ROOT / "README.md").read_text(encoding="utf-8")
        assert readme_gaps(infos, readme) == []
        fewer = [i for i in infos if i["name"] != "VistaZoomVideo"]
        gaps = "\n".join(readme_gaps(fewer, readme))
        assert "lists VistaZoomVideo, which is not a Vista node" in gaps
        extra = copy.deepcopy(infos[0])
        extra["name"] = "VistaSomethingNew"
        gaps = "\n".join(readme_gaps([*infos, extra], readme))
        assert "lacks VistaSomethingNew" in gaps
        changed = copy.deepcopy(infos)
        changed[0]["input"]["required"]["window_width"][1]["default"] = 768
        assert readme_gaps(changed, readme)
        assert readme_gaps(infos, readme.replace(reference.SECTION_TITLE, "## Nodes in short"))


class TestThumbnailWidgets:
    def test_vista_widget_order_matches_the_schemas(self, infos):
        """tools/draw_thumbnails.py reads Vista widgets by position: its table must be the frontend's order."""
        wrong = {info["name"]: widget_order(info) for info in infos
                 if info["name"] in thumbnails.WIDGETS and widget_order(info) != thumbnails.WIDGETS[info["name"]]}
        assert not wrong, f"update WIDGETS in tools/draw_thumbnails.py: {wrong}"

    def test_host_widget_order_matches_the_host(self):
        import_host()
        import importlib

        sources = {"EmptyLatentImage": "nodes", "CheckpointLoaderSimple": "nodes", "UNETLoader": "nodes",
                   "KSampler": "nodes", "LoadImage": "nodes", "EmptySD3LatentImage": "comfy_extras.nodes_sd3",
                   "BasicScheduler": "comfy_extras.nodes_custom_sampler",
                   "KSamplerSelect": "comfy_extras.nodes_custom_sampler"}
        assert set(sources) == {t for t in thumbnails.WIDGETS if not t.startswith("Vista")}
        wrong = {}
        for node_type, module in sources.items():
            cls = getattr(importlib.import_module(module), node_type)
            if hasattr(cls, "GET_NODE_INFO_V1"):
                info = cls.GET_NODE_INFO_V1()
            else:
                types = cls.INPUT_TYPES()
                info = {"input": types, "input_order": {k: list(v) for k, v in types.items()}}
            if widget_order(info)[:len(thumbnails.WIDGETS[node_type])] != thumbnails.WIDGETS[node_type]:
                wrong[node_type] = widget_order(info)
        assert not wrong, f"update WIDGETS in tools/draw_thumbnails.py: {wrong}"


def test_host_reads_the_registry_metadata():
    """ComfyUI parses pyproject.toml when it loads the pack (comfy_config.config_parser): it must read it whole."""
    import_host()
    from comfy_config import config_parser

    config = config_parser.extract_node_configuration(str(ROOT))
    assert (config.project.name, config.project.version) == ("vista", pyproject()["project"]["version"])
    assert config.project.license.text == "GPL-3.0-only"  # the SPDX string form (PEP 639) reads as the licence text
    assert config.project.dependencies == requirements()
    assert config.tool_comfy.publisher_id == "vista" and config.tool_comfy.display_name.startswith("Vista")
    assert (ROOT / config.tool_comfy.icon).is_file()
    # One web-directory mechanism (WEB_DIRECTORY); [tool.comfy] web would register web/ a second time.
    assert config.tool_comfy.web is None


# --- host-free: the packaging files ----------------------------------------------------------------
def requirements() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


def pyproject() -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli", reason="reading pyproject.toml needs Python 3.11's tomllib or tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_pyproject_registry_fields():
    data = pyproject()
    project, comfy = data["project"], data["tool"]["comfy"]
    # The registry's node id, without "ComfyUI" (the registry asks so), = the custom_nodes/ folder name README uses.
    assert project["name"] == "vista" and re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    assert project["license"] == "GPL-3.0-only" and project["description"].strip()  # SPDX, not the deprecated table
    assert all((ROOT / path).is_file() for path in project["license-files"])
    assert project["dependencies"] == requirements(), "pyproject dependencies must be requirements.txt"
    assert not any(re.match(r"(torch|numpy)\b", dep) for dep in project["dependencies"])
    assert {"PublisherId", "DisplayName", "Icon"} <= set(comfy) and "web" not in comfy
    assert (ROOT / comfy["Icon"]).is_file() and comfy["Icon"].endswith(".svg")
    assert data["tool"]["pytest"]["ini_options"]["addopts"].startswith("--import-mode=importlib")


def test_icon_is_a_small_svg():
    icon = (ROOT / pyproject()["tool"]["comfy"]["Icon"]).read_text(encoding="utf-8")
    assert icon.lstrip().startswith("<svg") and "</svg>" in icon and len(icon) < 8000
    assert "<script" not in icon


def test_license_is_gpl3():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "GNU GENERAL PUBLIC LICENSE" in text and "Version 3, 29 June 2007" in text


def test_changelog_describes_the_version():
    """The version pyproject.toml carries is the changelog's newest section (dated once published,
    "unreleased" until then: tools/check_publish.py refuses to publish it undated)."""
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## \[.*$", text, flags=re.M)
    newest = re.fullmatch(r"## \[([^\]]+)\] - (unreleased|\d{4}-\d{2}-\d{2})", headings[0]) if headings else None
    assert newest and newest.group(1) == pyproject()["project"]["version"], headings[:2]
    assert not any("unreleased" in heading.lower() for heading in headings[1:]), headings
