"""Node tier: every number input of every Vista node is checked where ComfyUI's own checks stop (issue [H] 6, 7, 9).

ComfyUI's min/max check lets NaN through (every comparison with NaN is false); it is skipped for every input a
node's ``validate_inputs`` names; it never runs on a linked value; and ComfyUI still calls ``validate_inputs`` with
the raw value after its own conversion failed ("wide", ``None``, ``{}``). So, for every node that
``VistaExtension.get_node_list()`` returns, read from its live schema:

* every FLOAT input: ``validate_inputs`` refuses NaN, ±Inf and values outside the schema range with a message that
  names the node, the input, the value and the range; ``execute`` refuses the same (a linked value);
* every input ``validate_inputs`` names: a value that is not a number is left to ComfyUI's own message (True);
* the zoom hints and the zoom video's budget (:func:`nodes.budget.check_video_budget`).

The /prompt behaviour through a real server on both hosts is tests/host/test_bad_inputs.py.
"""
from __future__ import annotations

import inspect
import math

import pytest
import torch

import comfy_server
from host import import_host

BAD_FLOATS = (math.nan, math.inf, -math.inf)
NOT_NUMBERS = ("wide", None, {}, [1, 2, 3], "")


@pytest.fixture(scope="module")
def nodes():
    import_host()
    from comfy_api.latest import io
    from vista.nodes import VistaExtension

    return io, comfy_server.run_coroutine(VistaExtension().get_node_list())  # not asyncio.run: see run_coroutine


def schema_inputs(node):
    return node.define_schema().inputs


def float_inputs(io, nodes):
    return [(node, spec) for node in nodes for spec in schema_inputs(node) if isinstance(spec, io.Float.Input)]


def validated_names(node) -> list[str]:
    """The inputs a node's own ``validate_inputs`` names (what ComfyUI passes it), [] without one."""
    if "validate_inputs" not in node.__dict__:
        return []
    return [p for p in inspect.signature(node.validate_inputs).parameters if p != "cls"]


def execute_kwargs(io, node) -> dict:
    """Every input at its schema default (widgets) or None (sockets: linked, never reached before the check)."""
    return {spec.id: getattr(spec, "default", None) if isinstance(spec, io.WidgetInput) else None
            for spec in schema_inputs(node)}


def number(x) -> str:
    return str(x) if isinstance(x, int) else format(x, ".6g")


class TestEveryFloatInput:
    def test_the_pack_has_float_inputs(self, nodes):
        io, node_list = nodes
        assert len(float_inputs(io, node_list)) >= 12  # tau, weight x2, decay, fraction, eta x2, s_noise x2, alpha, …

    @pytest.mark.parametrize("bad", BAD_FLOATS, ids=["nan", "inf", "-inf"])
    def test_validate_inputs_refuses_non_finite(self, nodes, bad):
        io, node_list = nodes
        for node, spec in float_inputs(io, node_list):
            assert spec.id in validated_names(node), f"{node.__name__}.validate_inputs does not check {spec.id}"
            message = node.validate_inputs(**{spec.id: bad})
            display = node.define_schema().display_name
            assert isinstance(message, str), f"{display}: {spec.id}={bad} passed validate_inputs"
            assert message.startswith(f"{display}: {spec.id}={number(bad)} is not a finite number"), message
            assert f"[{number(spec.min)}, {number(spec.max)}]" in message, message

    def test_validate_inputs_rechecks_the_schema_range(self, nodes):
        """Naming an input in validate_inputs removes ComfyUI's own min/max check: the node re-checks it."""
        io, node_list = nodes
        for node, spec in float_inputs(io, node_list):
            display = node.define_schema().display_name
            for value in (spec.min - 0.5, spec.max + 0.5):
                message = node.validate_inputs(**{spec.id: value})
                assert message == (f"{display}: {spec.id}={number(value)} must be in [{number(spec.min)}, "
                                   f"{number(spec.max)}] (default {number(spec.default)})"), message
            for value in (spec.min, spec.max, spec.default):
                assert node.validate_inputs(**{spec.id: value}) is True

    @pytest.mark.parametrize("bad", BAD_FLOATS, ids=["nan", "inf", "-inf"])
    def test_execute_refuses_a_linked_non_finite_value(self, nodes, bad):
        """A linked value reaches execute unchecked by the host (validate_inputs sees None)."""
        io, node_list = nodes
        for node, spec in float_inputs(io, node_list):
            display = node.define_schema().display_name
            kwargs = {**execute_kwargs(io, node), spec.id: bad}
            with pytest.raises(ValueError, match=rf"^{display}: {spec.id}={number(bad)} is not a finite number"):
                node.execute(**kwargs)


class TestValuesComfyUIRefusesItself:
    """validate_inputs gets the raw value after ComfyUI's own conversion failed, None for a linked or missing
    input: it must leave them to ComfyUI's message rather than fail on a comparison."""

    @pytest.mark.parametrize("raw", NOT_NUMBERS, ids=["string", "null", "object", "list", "empty"])
    def test_not_a_number_is_left_to_the_host(self, nodes, raw):
        io, node_list = nodes
        checked = [(node, name) for node in node_list for name in validated_names(node)
                   if isinstance(next(s for s in schema_inputs(node) if s.id == name), (io.Int.Input, io.Float.Input))]
        assert {n.__name__ for n, _ in checked} >= {"VistaTiledDiffusion", "VistaLatentFusionSampler"}
        for node, name in checked:
            assert node.validate_inputs(**{name: raw}) is True, (node.__name__, name, raw)

    def test_the_other_inputs_are_still_checked(self, nodes):
        """With window_width not a number, the other window inputs keep their checks."""
        from vista.nodes.tiled_diffusion import VistaTiledDiffusion

        assert VistaTiledDiffusion.validate_inputs("wide", 512, 0, 128) == \
            "Vista Tiled Diffusion: stride_x=0 px must be in [8, 16384] px"
        assert VistaTiledDiffusion.validate_inputs(512, None, 128, 600) is True  # window_height linked
        assert VistaTiledDiffusion.validate_inputs(512, 512, 128, 600).startswith(
            "Vista Tiled Diffusion: stride_y=600 px must be at most window_height=512 px")

    def test_linked_window_values_are_checked_when_the_node_runs(self, nodes):
        from vista.nodes.tiled_diffusion import VistaTiledDiffusion

        with pytest.raises(ValueError, match=r"^Vista Tiled Diffusion: stride_x=4 px must be in \[8, 16384\] px"):
            VistaTiledDiffusion.execute(None, 512, 512, 4, 128, "uniform", False, 4)
        with pytest.raises(ValueError, match=r"^Vista Tiled Diffusion: stride_x=640 px must be at most window_width"):
            VistaTiledDiffusion.execute(None, 512, 512, 640, 128, "uniform", False, 4)


class TestZoomHints:
    def test_blank_prompts_refused_at_prompt(self, nodes):
        from vista.nodes.zoom import VistaZoomPrompts

        message = VistaZoomPrompts.validate_inputs(" \n\t\n")
        assert message.startswith("Vista Zoom Prompts: prompts is blank; write one prompt per line, one line per zoom "
                                  "level"), message
        assert VistaZoomPrompts.validate_inputs("a galaxy") is True and VistaZoomPrompts.validate_inputs(None) is True

    @pytest.mark.parametrize("text, levels, says, never", [
        ("\n  \n", 4, "prompts is blank", "set levels to 0"),
        ("\n".join(f"line {i}" for i in range(40)), 4, "at most 32 levels", "set levels to 40"),
        ("a\nb", 4, "or set levels to 2 on Vista Zoom Settings", "is blank")])
    def test_the_fix_is_one_the_settings_allow(self, nodes, text, levels, says, never):
        from vista.nodes.zoom_sampling import split_prompts

        with pytest.raises(ValueError) as err:
            split_prompts(text, levels)
        assert says in str(err.value) and never not in str(err.value), str(err.value)

    def test_one_range_for_eta_and_s_noise(self, nodes):
        """eta and s_noise mean the same on both ancestral sampler nodes: one range each."""
        io, node_list = nodes
        ranges = {}
        for node in node_list:
            for spec in schema_inputs(node):
                if spec.id in ("eta", "s_noise"):
                    ranges.setdefault(spec.id, set()).add((spec.min, spec.max))
        assert ranges == {"eta": {(0.0, 1.0)}, "s_noise": {(0.0, 2.0)}}, ranges


class TestVideoBudget:
    def test_refused_before_rendering(self, nodes):
        """10^9 frames per level of two 64 px levels: ~45 TB, more than any machine has free; refused at once."""
        from vista.core.zoom.stack import ZoomSettings
        from vista.nodes.budget import check_video_budget  # noqa: F401  (without it the node would render away)
        from vista.nodes.zoom import VistaZoomVideo

        images = torch.rand(2, 64, 64, 3)
        with pytest.raises(ValueError, match=r"^Vista Zoom Video: 1,000,000,001 frames \(\(levels 2 - 1\) x "
                                             r"frames_per_level 1000000000 \+ 1\) of 64x64 px need an estimated "
                                             r"[\d,.]+ GB, but only [\d,.]+ GB is free on cpu\. Refused before "
                                             r"rendering; lower frames_per_level \(at most \d+ fits now\)"):
            VistaZoomVideo.execute(images, ZoomSettings(2, 2), 10**9, 0)

    def test_fit_is_the_largest_that_fits(self, nodes):
        from vista.core.zoom.video import video_bytes
        from vista.nodes.budget import video_fit

        frame = 64 * 64 * 3 * 4
        for levels in (1, 2, 5, 32):
            for free in (frame * 3, frame * 7, frame * 1000, frame * 123457):
                fit = video_fit(levels, frame, free)
                if fit:
                    assert video_bytes(levels, fit, 64, 64, 3) <= free
                    if levels > 1:
                        assert video_bytes(levels, fit + 1, 64, 64, 3) > free
                else:
                    assert video_bytes(levels, 1, 64, 64, 3) > free
