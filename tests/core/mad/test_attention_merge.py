"""core/mad/attention_merge.py: MAD merge/split indexing, merged self/cross attention, τ schedule."""

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from torch.utils._python_dispatch import TorchDispatchMode

from vista.core.mad.attention_merge import (
    MAD_LAYOUT_KEY,
    MadLayout,
    block_scale,
    canvas_block_hw,
    mad_active,
    mad_attention_patch,
    mad_step_index,
    mad_steps,
    merge_tokens,
    merged_cross_attention,
    merged_self_attention,
    query_chunk,
    split_tokens,
    token_index,
    window_token_index,
)
from peak_bytes import PeakBytes
from vista.core.checks import VistaInputError
from vista.core.canvas.windows import Window, crop_windows, off_grid_axes, plan_windows

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


def make_attention(heads):
    """Plain softmax attention over (B, T, heads·d) tokens, like ComfyUI's optimized_attention."""

    def attention(q, k, v):
        q, k, v = (rearrange(t, "b t (h d) -> b h t d", h=heads) for t in (q, k, v))
        return rearrange(F.scaled_dot_product_attention(q, k, v), "b h t d -> b t (h d)")

    return attention


def window_tokens(features, windows, scale):
    """Window tokens cropped from block-grid features: (B, C, H_s, W_s) → (N·B, h_s·w_s, C), window-major."""
    return rearrange(crop_windows(features, windows, scale), "bn c h w -> bn (h w) c")


def grid_tokens(features):
    return rearrange(features, "b c h w -> b (h w) c")


@st.composite
def aligned_plans(draw):
    """Plans whose sizes, strides and canvas are multiples of the block scale (the UNet rule)."""
    s = draw(st.sampled_from([1, 2, 4]))
    wh, ww = s * draw(st.integers(1, 4)), s * draw(st.integers(1, 4))
    H, W = s * draw(st.integers(wh // s, 8)), s * draw(st.integers(ww // s, 8))
    sh, sw = s * draw(st.integers(1, wh // s)), s * draw(st.integers(1, ww // s))
    wrap = draw(st.booleans())
    return plan_windows(H, W, wh, ww, sh, sw, wrap_x=wrap, align=s), (H, W), s


class TestMadLayout:
    def test_smoke(self):
        layout = MadLayout(plan_windows(8, 40, 8, 8, 8, 8, wrap_x=True), (8, 40), wrap_x=True)
        assert layout.n_windows == 5 and layout.batch == 1

    @pytest.mark.parametrize(
        "windows, canvas, wrap, match",
        [((), (8, 8), False, "empty"),
         ((Window(0, 0, 8, 8), Window(0, 0, 4, 4)), (8, 8), False, "same size"),
         ((Window(0, 0, 8, 16),), (8, 8), False, "window size"),
         ((Window(4, 0, 8, 8),), (8, 16), False, "offsets"),
         ((Window(0, 12, 8, 8),), (8, 16), False, "wrap_x"),
         ((Window(0, 0, 1, 1),), (0, 8), False, "canvas_hw")],
    )
    def test_exception(self, windows, canvas, wrap, match):
        with pytest.raises(VistaInputError, match=match):
            MadLayout(windows, canvas, wrap)

    def test_batch_exception(self):
        with pytest.raises(VistaInputError, match="batch"):
            MadLayout((Window(0, 0, 8, 8),), (8, 8), batch=0)

    def test_wrap_allows_windows_past_the_edge(self):
        assert MadLayout((Window(0, 12, 8, 8),), (8, 16), wrap_x=True).n_windows == 1

    def test_token_index_built_once_per_grid_and_shared_by_copies(self):
        """The index is cached on the layout for the run; dataclasses.replace (per-call batch) shares it."""
        from dataclasses import replace

        layout = MadLayout(plan_windows(8, 24, 8, 8, 4, 4), (8, 24))
        first = layout.token_index((4, 4))
        assert layout.token_index((4, 4)) is first
        assert replace(layout, batch=3).token_index((4, 4)) is first
        assert layout.token_index((2, 2)) is not first


class TestBlockScale:
    @pytest.mark.parametrize("window, block, s", [((64, 64), (64, 64), 1), ((64, 96), (8, 12), 8),
                                                  ((60, 20), (8, 3), 8), ((12, 12), (3, 3), 4), ((6, 10), (3, 5), 2), ((6, 6), (1, 1), 8)])
    def test_smoke(self, window, block, s):
        assert block_scale(window, block) == s

    @pytest.mark.parametrize("window, block", [((64, 64), (7, 8)), ((64, 64), (0, 8)), ((8, 8), (16, 16))])
    def test_exception(self, window, block):
        with pytest.raises(VistaInputError, match="grid"):
            block_scale(window, block)


class TestCanvasBlockHw:
    def test_ceil(self):
        assert canvas_block_hw((64, 100), 8) == (8, 13)
        assert canvas_block_hw((5, 7), 1) == (5, 7)

    def test_exception(self):
        with pytest.raises(VistaInputError, match="scale"):
            canvas_block_hw((8, 8), 0)


class TestWindowTokenIndex:
    def test_shape(self):
        windows = plan_windows(16, 48, 16, 16, 8, 8)
        index, grid = window_token_index(windows, (16, 48), (4, 4))
        assert index.shape == (len(windows), 16) and grid == (4, 12) and index.device.type == "cpu"

    def test_matches_crop_windows(self):
        """The gather index is crop_windows of a canvas of token ids (wrap included)."""
        windows = plan_windows(12, 40, 12, 12, 8, 8, wrap_x=True, align=4)
        ids = torch.arange(3 * 10, dtype=torch.float64).reshape(1, 1, 3, 10)
        index, _ = window_token_index(windows, (12, 40), (3, 3))
        assert torch.equal(index.double(), window_tokens(ids, windows, 4)[..., 0])

    def test_exception(self):
        with pytest.raises(VistaInputError, match="empty"):
            window_token_index((), (8, 8), (1, 1))


class TestTokenIndex:
    def test_smoke(self, device):
        idx = token_index(plan_windows(8, 24, 8, 8, 4, 4), (8, 24), (2, 2), device)
        assert idx.index.shape == (5 * 4,) and idx.count.shape == (12, 1) and idx.grid == (2, 6)
        assert idx.index.device.type == device.type and idx.count.dtype == torch.float32

    def test_chunk_of_the_plan_raises(self):
        """Part of the plan leaves canvas tokens without a window."""
        with pytest.raises(VistaInputError, match="covered by no window"):
            token_index(plan_windows(8, 24, 8, 8, 4, 4)[:2], (8, 24), (8, 8))

    def test_misaligned_offsets_raise(self):
        """Offsets off a deep block's grid are refused (they used to round, and here leave a column uncovered)."""
        windows = (Window(0, 0, 12, 12), Window(0, 9, 12, 12), Window(0, 18, 12, 12))
        with pytest.raises(VistaInputError, match=r"\(y=0, x=9\).*off the 1/4 grid \(width\): MAD's merged tokens"):
            token_index(windows, (12, 30), (3, 3))


def assert_placed_exactly(windows, canvas_hw, block_hw) -> None:
    """Token ``(r, c)`` of every window goes to the canvas token that starts where it starts: at block scale ``s``
    it covers latent px from ``(y + s·r, x + s·c)`` (columns modulo the canvas width), canvas token ``(R, C)``
    from ``(s·R, s·C)``."""
    idx = token_index(windows, canvas_hw, block_hw)
    s, (_, W), (_, Ws) = block_scale((windows[0].h, windows[0].w), block_hw), canvas_hw, idx.grid
    r, c = (t.flatten() for t in torch.meshgrid(torch.arange(block_hw[0]), torch.arange(block_hw[1]), indexing="ij"))
    for n, win in enumerate(windows):
        R, C = idx.index.view(len(windows), -1)[n].div(Ws, rounding_mode="floor"), idx.index.view(len(windows), -1)[n] % Ws
        assert torch.equal(s * R, win.y + s * r), (win, s)
        assert torch.equal(s * C, (win.x + s * c) % W), (win, s)


class TestTokenPlacement:
    """Issue [H] 3: the last window of an SDXL canvas 2072 px wide (1024 px windows, stride 256 px, offsets on the
    32 px grid) starts at 131 latent px, off the 1/2 and 1/4 block grids; its merged tokens used to land a rounded
    position away (up to 1 latent px), silently. Every window token is merged where it lies, or the plan is refused."""

    @pytest.mark.parametrize("width_px, scale, outcome", [
        (2048, 1, "exact"), (2048, 2, "exact"), (2048, 4, "exact"),
        (2064, 1, "exact"), (2064, 2, "exact"), (2064, 4, "refused"),
        (2072, 1, "exact"), (2072, 2, "refused"), (2072, 4, "refused")])
    def test_sdxl_canvas(self, width_px, scale, outcome):
        canvas_hw = (128, width_px // 8)
        windows = plan_windows(*canvas_hw, 128, 128, 32, 32, align=4)
        block_hw = (128 // scale, 128 // scale)
        if outcome == "exact":
            assert_placed_exactly(windows, canvas_hw, block_hw)
        else:
            with pytest.raises(VistaInputError, match=rf"x={width_px // 8 - 128}\).*off the 1/{scale} grid"):
                token_index(windows, canvas_hw, block_hw)

    @settings(max_examples=150, deadline=None)
    @given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 9), st.integers(0, 9), st.sampled_from([1, 2, 4]),
           st.integers(1, 5), st.sampled_from([1, 2, 4, 8]), st.booleans())
    def test_exact_or_refused(self, wh, ww, extra_h, extra_w, align, strides, scale, wrap):
        """Any plan (sizes off every grid included) at any block scale: merged exactly where its tokens lie, or
        refused — refused exactly when a window is off that block's grid."""
        canvas_hw = (wh + extra_h, ww + extra_w)
        stride = align * strides
        assume(stride <= min(wh, ww))
        windows = plan_windows(*canvas_hw, wh, ww, stride, stride, wrap_x=wrap, align=align)
        block_hw = (-(-wh // scale), -(-ww // scale))
        assume(block_scale((wh, ww), block_hw) == scale)
        if off_grid_axes(windows, canvas_hw, scale):
            with pytest.raises(VistaInputError, match="off the 1/"):
                token_index(windows, canvas_hw, block_hw)
        else:
            assert_placed_exactly(windows, canvas_hw, block_hw)


def idx_of(windows, canvas_hw, block_hw):
    return token_index(windows, canvas_hw, block_hw)


class TestMergeTokens:
    def test_smoke(self, device):
        windows = plan_windows(8, 24, 8, 8, 4, 4)
        idx = token_index(windows, (8, 24), (2, 2), device)
        out = merge_tokens(torch.randn(2 * len(windows), 4, 3, device=device), idx, batch=2)
        assert out.shape == (2, 2 * 6, 3) and out.device.type == device.type

    def test_uniform_average_over_overlaps_window_major(self):
        """Batch index n·B + b: window 0 of samples 0 and 1, then window 1 of samples 0 and 1."""
        idx = idx_of((Window(0, 0, 1, 2), Window(0, 1, 1, 2)), (1, 3), (1, 2))
        tokens = torch.tensor([[[1.0], [3.0]], [[0.0], [2.0]], [[5.0], [7.0]], [[4.0], [6.0]]])
        out = merge_tokens(tokens, idx, batch=2)
        assert out[..., 0].tolist() == [[1.0, 4.0, 7.0], [0.0, 3.0, 6.0]]

    def test_chunks_of_a_concatenated_call(self):
        """K chunks (ComfyUI's negative + positive in one call), each window-major: merged per (chunk, sample)."""
        windows = plan_windows(8, 24, 8, 8, 4, 4)
        idx = idx_of(windows, (8, 24), (4, 4))
        chunks = [torch.randn(len(windows) * 2, 16, 3, dtype=torch.float64) for _ in range(3)]
        together = merge_tokens(torch.cat(chunks), idx, batch=2)
        apart = torch.cat([merge_tokens(c, idx, batch=2) for c in chunks])
        torch.testing.assert_close(together, apart, rtol=0, atol=0)

    def test_wrap_continues_at_column_zero(self):
        idx = idx_of((Window(0, 0, 1, 2), Window(0, 2, 1, 2)), (1, 3), (1, 2))
        tokens = torch.tensor([[[1.0], [2.0]], [[3.0], [5.0]]])
        assert merge_tokens(tokens, idx)[0, :, 0].tolist() == [3.0, 2.0, 3.0]

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
    def test_dtype_kept(self, dtype):
        windows = plan_windows(8, 16, 8, 8, 4, 4)
        idx = idx_of(windows, (8, 16), (8, 8))
        assert merge_tokens(torch.randn(len(windows), 64, 2, dtype=dtype), idx).dtype == dtype

    @pytest.mark.parametrize(
        "shape, batch, match",
        [((5, 4, 3), 1, "multiple of 3 windows"), ((3, 4, 3), 2, "multiple of 3 windows x 2 samples"),
         ((3, 5, 3), 1, "4 tokens"), ((3, 4), 1, "shape"), ((0, 4, 3), 1, "multiple")],
    )
    def test_exception(self, shape, batch, match):
        idx = idx_of(plan_windows(8, 16, 8, 8, 4, 4), (8, 16), (2, 2))
        with pytest.raises(VistaInputError, match=match):
            merge_tokens(torch.zeros(shape), idx, batch)


class TestSplitTokens:
    def test_shape_window_major(self):
        windows = plan_windows(4, 8, 4, 4, 4, 4)
        canvas = torch.arange(2 * 32, dtype=torch.float32).reshape(2, 32, 1)
        out = split_tokens(canvas, idx_of(windows, (4, 8), (4, 4)), batch=2)
        assert out.shape == (4, 16, 1)
        assert out[1, 0, 0] == 32 and out[2, 0, 0] == 4  # n·B + b: window 0 of sample 1, window 1 of sample 0

    @pytest.mark.parametrize("shape, batch, match", [((1, 31, 1), 1, "32 tokens"), ((32, 1), 1, "shape"),
                                                     ((3, 32, 1), 2, "multiple of batch")])
    def test_exception(self, shape, batch, match):
        with pytest.raises(VistaInputError, match=match):
            split_tokens(torch.zeros(shape), idx_of(plan_windows(4, 8, 4, 4, 4, 4), (4, 8), (4, 4)), batch)

    @settings(max_examples=60, deadline=None)
    @given(aligned_plans(), st.integers(1, 2), st.integers(1, 2))
    def test_merge_split_roundtrip(self, plan, batch, chunks):
        windows, canvas_hw, s = plan
        idx = idx_of(windows, canvas_hw, (windows[0].h // s, windows[0].w // s))
        Hs, Ws = canvas_block_hw(canvas_hw, s)
        x = torch.randn(chunks * batch, Hs * Ws, 3, dtype=torch.float64)
        y = merge_tokens(split_tokens(x, idx, batch), idx, batch)
        torch.testing.assert_close(y, x, rtol=1e-12, atol=1e-12)


class TestMergedSelfAttention:
    def test_one_window_is_plain_attention(self, device):
        q, k, v = torch.randn(3, 2, 6 * 10, 8, device=device)
        attention = make_attention(2)
        idx = token_index((Window(0, 0, 12, 20),), (12, 20), (6, 10), device)
        out = merged_self_attention(q, k, v, idx, 2, attention)
        torch.testing.assert_close(out, attention(q, k, v), rtol=0, atol=0)

    @pytest.mark.parametrize(
        "canvas, window, stride, scale, wrap",
        [((8, 24), (8, 8), (4, 4), 1, False), ((16, 40), (8, 16), (4, 8), 2, False),
         ((12, 40), (12, 12), (4, 4), 4, False), ((20, 36), (12, 12), (8, 8), 4, False),
         ((12, 40), (12, 12), (8, 8), 4, True), ((8, 30), (8, 10), (4, 6), 2, True), ((6, 18), (6, 6), (3, 5), 1, True)],
    )
    def test_equals_full_canvas_attention(self, canvas, window, stride, scale, wrap):
        """Windows cropped from canvas features F: each output is the crop of attention over all of F."""
        torch.manual_seed(0)
        windows = plan_windows(*canvas, *window, *stride, wrap_x=wrap, align=scale)
        Hs, Ws = canvas_block_hw(canvas, scale)
        feats = torch.randn(2, 8, Hs, Ws, dtype=torch.float64)
        wq, wk, wv = torch.randn(3, 8, 8, dtype=torch.float64)
        attention = make_attention(2)
        tok = window_tokens(feats, windows, scale)
        idx = idx_of(windows, canvas, (-(-window[0] // scale), -(-window[1] // scale)))
        out = merged_self_attention(tok @ wq, tok @ wk, tok @ wv, idx, 2, attention)
        full = grid_tokens(feats)
        reference = attention(full @ wq, full @ wk, full @ wv)
        reference = rearrange(reference, "b (h w) c -> b c h w", h=Hs)
        torch.testing.assert_close(out, window_tokens(reference, windows, scale))

    def test_exception(self):
        idx = idx_of((Window(0, 0, 4, 4),), (4, 4), (4, 4))
        q = torch.zeros(1, 16, 4)
        with pytest.raises(VistaInputError, match="self-attention k"):
            merged_self_attention(q, torch.zeros(1, 20, 4), q, idx, 1, make_attention(1))


class TestMergedCrossAttention:
    def test_one_window_is_plain_attention(self, device):
        q = torch.randn(2, 6 * 10, 8, device=device)
        k, v = torch.randn(2, 2, 7, 8, device=device)
        attention = make_attention(2)
        out = merged_cross_attention(q, k, v, token_index((Window(0, 0, 6, 10),), (6, 10), (6, 10), device), 2, attention)
        torch.testing.assert_close(out, attention(q, k, v), rtol=0, atol=0)

    @pytest.mark.parametrize("scale, wrap", [(1, False), (2, False), (1, True)])
    def test_non_overlapping_equals_per_window_attention(self, scale, wrap):
        """Cross-attention is per query: with disjoint windows the merge changes nothing, and every
        sample's windows meet that sample's prompt (prompts tiled window-major, as ComfyUI repeats them)."""
        windows = plan_windows(8, 32, 8, 8, 8, 8, wrap_x=wrap)
        if wrap:
            windows = tuple(Window(w.y, w.x + 4, w.h, w.w) for w in windows)  # every window shifted: the last wraps
        n, t = len(windows), (8 // scale) ** 2
        q = torch.randn(n * 3, t, 8, dtype=torch.float64)
        k, v = (torch.randn(3, 5, 8, dtype=torch.float64).repeat(n, 1, 1) for _ in range(2))
        attention = make_attention(4)
        idx = idx_of(windows, (8, 32), (8 // scale, 8 // scale))
        out = merged_cross_attention(q, k, v, idx, 3, attention)
        torch.testing.assert_close(out, attention(q, k, v))

    @pytest.mark.parametrize("k_shape, match", [((3, 3, 4), "batches must match"), ((2, 4), "shape")])
    def test_exception(self, k_shape, match):
        idx = idx_of(plan_windows(4, 8, 4, 4, 4, 4), (4, 8), (4, 4))
        with pytest.raises(VistaInputError, match=match):
            merged_cross_attention(torch.zeros(2, 16, 4), torch.zeros(k_shape), torch.zeros(2, 3, 4), idx, 1,
                                   make_attention(1))


def round_half_up_steps(tau_hundredths: int, n: int) -> int:
    """Integer reference: round-half-up(tau·n) for tau = tau_hundredths / 100."""
    return (tau_hundredths * n + 50) // 100


class TestMadSteps:
    def test_every_widget_tau_and_step_count(self):
        """Every tau on the widget's 0.01 grid x steps 1..150 against the integer reference (issue [R] 2)."""
        for hundredths in range(101):
            tau = hundredths / 100
            for n in range(1, 151):
                assert mad_steps(tau, n) == round_half_up_steps(hundredths, n), (tau, n)

    def test_known_float_traps(self):
        """tau·n that floats put just above an integer, and halves that round up."""
        assert (mad_steps(0.14, 50), mad_steps(0.28, 25), mad_steps(0.07, 100)) == (7, 7, 7)
        assert (mad_steps(0.29, 50), mad_steps(0.3, 5), mad_steps(0.5, 1)) == (15, 2, 1)

    @pytest.mark.parametrize("tau, n", [(-0.1, 10), (1.5, 10), (0.3, -1)])
    def test_exception(self, tau, n):
        with pytest.raises(VistaInputError, match="tau|n_steps"):
            mad_steps(tau, n)


class TestMadStepIndex:
    def test_steps_and_substeps(self):
        sigmas = [14.6, 7.0, 3.0, 1.0, 0.0]
        assert [mad_step_index(s, sigmas) for s in sigmas[:-1]] == [0, 1, 2, 3]
        assert mad_step_index(5.0, sigmas) == 1  # a sub-step between sigma_1 and sigma_2
        assert mad_step_index(20.0, sigmas) == 0 and mad_step_index(0.0, sigmas) == 3

    def test_tensor_schedule(self):
        sigmas = torch.linspace(10, 0, 11, dtype=torch.float32)
        assert mad_step_index(float(sigmas[4]), sigmas) == 4

    def test_exception(self):
        with pytest.raises(VistaInputError, match="sample_sigmas"):
            mad_step_index(1.0, [1.0])


class TestMadActive:
    def test_paper_default_first_15_of_50(self):
        assert [mad_active(i, 50, 0.3) for i in range(50)] == [True] * 15 + [False] * 35

    @pytest.mark.parametrize("tau, expected", [(0.0, False), (1.0, True)])
    def test_never_and_always(self, tau, expected):
        assert all(mad_active(i, 20, tau) is expected for i in range(20))

    @pytest.mark.parametrize("tau", [-0.1, 1.5])
    def test_exception(self, tau):
        with pytest.raises(VistaInputError, match="tau"):
            mad_active(0, 10, tau)


def fake_optimized_attention(q, k, v, heads, attn_precision=None, transformer_options=None):
    """ComfyUI's optimized_attention signature over a plain softmax attention."""
    return make_attention(heads)(q, k, v)


class NoSyncMode(TorchDispatchMode):
    """Fails on ops that read device values back to the host (.item()/float(), equal, nonzero) or copy to a device."""

    SYNCS = ("_local_scalar_dense", "equal", "nonzero", "is_nonzero")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        assert name not in self.SYNCS, f"device sync inside the attention patch: aten.{name}"
        assert not (name == "_to_copy" and (kwargs or {}).get("device") not in (None, args[0].device)), \
            "host-to-device copy inside the attention patch"
        return func(*args, **(kwargs or {}))


class TestMadAttentionPatch:
    windows = plan_windows(8, 24, 8, 8, 4, 4)

    def extra_options(self, layout=True, batch=2):
        extra = {"n_heads": 2, "activations_shape": [batch * len(self.windows), 8, 4, 4]}
        if layout:
            extra[MAD_LAYOUT_KEY] = MadLayout(self.windows, (8, 24), batch=batch)
        return extra

    def qkv(self, cross):
        n = len(self.windows)
        q = torch.randn(n * 2, 16, 8, dtype=torch.float64)
        if cross:
            return (q, *(torch.randn(2, 5, 8, dtype=torch.float64).repeat(n, 1, 1) for _ in range(2)))
        return (q, *torch.randn(2, n * 2, 16, 8, dtype=torch.float64))

    @pytest.mark.parametrize("cross", [False, True])
    def test_layout_merges(self, cross):
        q, k, v = self.qkv(cross)
        out = mad_attention_patch(cross, fake_optimized_attention)(q, k, v, self.extra_options())
        merged = merged_cross_attention if cross else merged_self_attention
        idx = idx_of(self.windows, (8, 24), (4, 4))
        torch.testing.assert_close(out, merged(q, k, v, idx, 2, make_attention(2)))

    @pytest.mark.parametrize("cross", [False, True])
    def test_without_layout_plain_attention(self, cross):
        """No layout (MAD inactive at this step, or no Vista window code): exactly the host's attention."""
        q, k, v = self.qkv(cross)
        out = mad_attention_patch(cross, fake_optimized_attention)(q, k, v, self.extra_options(layout=False))
        torch.testing.assert_close(out, make_attention(2)(q, k, v), rtol=0, atol=0)

    @pytest.mark.parametrize("cross", [False, True])
    def test_no_device_sync_and_index_built_once(self, cross):
        """Issue [R] 6: after the first call builds the index, a patched attention call does no device sync
        (no .item(), torch.equal, nonzero) and no host-to-device copy."""
        q, k, v = self.qkv(cross)
        extra = self.extra_options()
        patch = mad_attention_patch(cross, fake_optimized_attention)
        patch(q, k, v, extra)  # builds and caches the index on the layout
        cached = dict(extra[MAD_LAYOUT_KEY].cache)
        with NoSyncMode():
            patch(q, k, v, extra)
        assert extra[MAD_LAYOUT_KEY].cache == cached


# --- Issue [F] 2: the memory-lean merge/split, query chunks, poll ------------------------------------------------


def old_merge_tokens(tokens, idx, batch=1):
    """The merge before issue [F] 2 (one float32 copy of the whole reordered window batch), kept as the reference."""
    acc = torch.promote_types(tokens.dtype, torch.float32)
    grouped = rearrange(tokens, "(k n b) t c -> (k b) (n t) c", n=idx.n_windows, b=batch).to(acc)
    canvas = grouped.new_zeros(grouped.shape[0], idx.grid[0] * idx.grid[1], grouped.shape[-1])
    canvas.index_add_(1, idx.index, grouped)
    return (canvas / idx.count.to(acc)).to(tokens.dtype)


def old_split_tokens(canvas_tokens, idx, batch=1):
    """The split before issue [F] 2 (a gather, then a reordering copy when B > 1)."""
    return rearrange(canvas_tokens[:, idx.index], "(k b) (n t) c -> (k n b) t c", n=idx.n_windows, b=batch)


def old_self_attention(q, k, v, idx, batch, attention):
    return old_split_tokens(attention(*(old_merge_tokens(t, idx, batch) for t in (q, k, v))), idx, batch)


def math_attention(heads):
    """Attention that materialises its scores (softmax(q kᵀ/√d) v), like a host without a memory-efficient kernel."""

    def attention(q, k, v):
        q, k, v = (rearrange(t, "b t (h d) -> b h t d", h=heads) for t in (q, k, v))
        scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
        return rearrange(scores.softmax(-1) @ v, "b h t d -> b t (h d)")

    return attention


def peak_bytes(fn):
    """Peak bytes allocated (and alive at once) while ``fn()`` runs; its result is dropped."""
    tracker = PeakBytes()
    with tracker:
        out = fn()
    del out
    return tracker.peak


DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]


class TestEquivalenceToTheOldMerge:
    """The memory-lean merge and split compute exactly what the previous implementation computed (CPU)."""

    @settings(max_examples=60, deadline=None)
    @given(aligned_plans(), st.integers(1, 3), st.integers(1, 2), st.sampled_from(DTYPES))
    def test_merge_bitwise(self, plan, batch, chunks, dtype):
        windows, canvas_hw, s = plan
        idx = idx_of(windows, canvas_hw, (windows[0].h // s, windows[0].w // s))
        tokens = torch.randn(chunks * len(windows) * batch, idx.n_tokens, 3).to(dtype)
        torch.testing.assert_close(merge_tokens(tokens, idx, batch), old_merge_tokens(tokens, idx, batch), rtol=0, atol=0)

    @settings(max_examples=60, deadline=None)
    @given(aligned_plans(), st.integers(1, 3), st.integers(1, 2))
    def test_split_bitwise(self, plan, batch, chunks):
        windows, canvas_hw, s = plan
        idx = idx_of(windows, canvas_hw, (windows[0].h // s, windows[0].w // s))
        canvas = torch.randn(chunks * batch, idx.grid[0] * idx.grid[1], 3)
        assert torch.equal(split_tokens(canvas, idx, batch), old_split_tokens(canvas, idx, batch))

    @pytest.mark.parametrize("batch, chunks", [(1, 1), (2, 1), (1, 2), (3, 2)])
    def test_self_and_cross_attention(self, batch, chunks):
        windows = plan_windows(12, 40, 8, 8, 4, 4, wrap_x=True, align=2)
        idx = idx_of(windows, (12, 40), (4, 4))
        n = len(windows) * batch * chunks
        q, k, v = torch.randn(3, n, 16, 8, dtype=torch.float64)
        attention = make_attention(2)
        torch.testing.assert_close(merged_self_attention(q, k, v, idx, batch, attention),
                                   old_self_attention(q, k, v, idx, batch, attention))
        prompt_k, prompt_v = (torch.randn(chunks * batch, 5, 8, dtype=torch.float64) for _ in range(2))  # per (k, b)
        kc, vc = (rearrange(t.view(chunks, 1, batch, 5, 8).expand(chunks, len(windows), batch, 5, 8), "k n b l c -> (k n b) l c")
                  for t in (prompt_k, prompt_v))
        old = old_split_tokens(attention(old_merge_tokens(q, idx, batch), prompt_k, prompt_v), idx, batch)
        torch.testing.assert_close(merged_cross_attention(q, kc, vc, idx, batch, attention), old)


class TestQueryChunk:
    @settings(max_examples=80, deadline=None)
    @given(aligned_plans())
    def test_scores_within_the_windowed_bound(self, plan):
        """chunk x canvas tokens <= N x T x T (the windowed attention's scores), and a chunk holds >= one window."""
        windows, canvas_hw, s = plan
        idx = idx_of(windows, canvas_hw, (windows[0].h // s, windows[0].w // s))
        chunk, n_canvas = query_chunk(idx), idx.grid[0] * idx.grid[1]
        assert chunk >= idx.n_tokens
        assert chunk * n_canvas <= idx.n_windows * idx.n_tokens ** 2

    def test_one_window_one_chunk(self):
        assert query_chunk(idx_of((Window(0, 0, 6, 10),), (6, 10), (6, 10))) == 60

    def test_paper_geometry_takes_few_chunks(self):
        """SD1.5, 512x3072 px at stride 128 px (MAD §5), level 0: 2 attention calls, not one per window (21)."""
        idx = idx_of(plan_windows(64, 384, 64, 64, 16, 16), (64, 384), (64, 64))
        assert query_chunk(idx) == 21 * 4096 ** 2 // (64 * 384) == 14336


class TestChunkedSelfAttention:
    windows = plan_windows(8, 64, 2, 2, 2, 2)  # 128 disjoint windows of 4 tokens: 512 canvas tokens, chunks of 4 queries

    def test_equals_one_call_and_polls_between_chunks(self):
        idx = idx_of(self.windows, (8, 64), (2, 2))
        q, k, v = torch.randn(3, 2 * len(self.windows), 4, 8, dtype=torch.float64)
        polls = []
        out = merged_self_attention(q, k, v, idx, 2, make_attention(2), poll=lambda: polls.append(1))
        torch.testing.assert_close(out, old_self_attention(q, k, v, idx, 2, make_attention(2)))
        assert len(polls) == 512 // query_chunk(idx) - 1 == 127

    def test_poll_raising_stops_between_chunks(self):
        idx = idx_of(self.windows, (8, 64), (2, 2))
        q = torch.randn(len(self.windows), 4, 8)
        calls = []

        def attention(q, k, v):
            calls.append(q.shape[1])
            return make_attention(2)(q, k, v)

        def poll():
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            merged_self_attention(q, q, q, idx, 1, attention, poll=poll)
        assert calls == [query_chunk(idx)]


class TestMemory:
    """Peak allocation of a merged attention call vs the host-style attention over the same window tokens."""

    @pytest.mark.parametrize("dtype, batch, chunks, scale", [(torch.float32, 1, 2, 2), (torch.float32, 2, 1, 2),
                                                             (torch.bfloat16, 1, 2, 2), (torch.float32, 1, 2, 1)])
    def test_self_attention_within_windowed_attention_plus_four_canvas_buffers(self, dtype, batch, chunks, scale):
        """SDPA (memory-efficient): merged <= windowed + 4 float32 canvas buffers (q, k, v, output) + the split
        index; the old merge needed a float32 copy of the whole (reordered) window batch on top."""
        canvas, window = (32, 64), 16
        windows = plan_windows(*canvas, window, window, 4, 4, align=scale)
        t = (window // scale) ** 2
        idx = idx_of(windows, canvas, (window // scale, window // scale))
        q, k, v = (torch.randn(chunks * len(windows) * batch, t, 64).to(dtype) for _ in range(3))
        attention = make_attention(4)
        windowed = peak_bytes(lambda: attention(q, k, v))
        groups, n_canvas = chunks * batch, idx.grid[0] * idx.grid[1]
        bound = windowed + 4 * groups * n_canvas * 64 * 4 + q.shape[0] * t * 8
        merged = peak_bytes(lambda: merged_self_attention(q, k, v, idx, batch, attention))
        assert merged <= bound, (merged, bound)
        if batch > 1 or dtype != torch.float32:  # the old merge's float32 window-batch copy is over the bound
            assert peak_bytes(lambda: old_self_attention(q, k, v, idx, batch, attention)) > bound

    def test_materialised_scores_stay_within_the_windowed_bound(self):
        """An attention that materialises its scores: 512 windows of 4 tokens. Over the 2048 canvas tokens at
        once the scores would be 2048² per head (256x the windows' 512·4²); the query chunks keep them at the
        windows' size."""
        windows = plan_windows(16, 256, 2, 2, 2, 2)
        idx = idx_of(windows, (16, 256), (2, 2))
        q, k, v = torch.randn(3, len(windows), 4, 8)
        attention = math_attention(2)
        windowed = peak_bytes(lambda: attention(q, k, v))
        bound = 2 * windowed + 4 * 2048 * 8 * 4 + len(windows) * 4 * 8
        assert peak_bytes(lambda: merged_self_attention(q, k, v, idx, 1, attention)) <= bound
        assert peak_bytes(lambda: old_self_attention(q, k, v, idx, 1, attention)) > 50 * bound

    def test_cross_attention_reads_window_zero_without_copying_the_prompts(self):
        """B > 1: the old code reordered every window's prompt copy before taking window 0's."""
        windows = plan_windows(16, 64, 8, 8, 4, 4)
        idx = idx_of(windows, (16, 64), (8, 8))
        n = len(windows) * 3
        q, kc, vc = torch.randn(n, 64, 32), torch.randn(n, 77, 32), torch.randn(n, 77, 32)
        attention = make_attention(2)
        windowed = peak_bytes(lambda: attention(q, kc, vc))
        bound = windowed + 3 * 3 * 16 * 64 * 32 * 4 + n * 64 * 8
        assert peak_bytes(lambda: merged_cross_attention(q, kc, vc, idx, 3, attention)) <= bound


class TestPatchPoll:
    windows = plan_windows(8, 24, 8, 8, 4, 4)

    def extra(self, layout=True):
        extra = {"n_heads": 2, "activations_shape": [len(self.windows), 8, 4, 4]}
        if layout:
            extra[MAD_LAYOUT_KEY] = MadLayout(self.windows, (8, 24))
        return extra

    @pytest.mark.parametrize("cross", [False, True])
    def test_polled_per_merged_call_and_chunk_never_without_layout(self, cross):
        polls = []
        patch = mad_attention_patch(cross, fake_optimized_attention, poll=lambda: polls.append(1))
        q = torch.randn(len(self.windows), 16, 8)
        patch(q, q, q, self.extra(layout=False))
        assert polls == []
        patch(q, q, q, self.extra())
        idx = idx_of(self.windows, (8, 24), (4, 4))
        chunks = 1 if cross else -(-48 // query_chunk(idx))  # 48 canvas tokens in chunks of 26: polled between
        assert len(polls) == chunks == (1 if cross else 2)

    def test_poll_raising_stops_before_the_attention(self):
        calls = []

        def attention(q, k, v, heads, attn_precision=None, transformer_options=None):
            calls.append(1)
            return q

        def poll():
            raise KeyboardInterrupt

        q = torch.randn(len(self.windows), 16, 8)
        with pytest.raises(KeyboardInterrupt):
            mad_attention_patch(False, attention, poll=poll)(q, q, q, self.extra())
        assert calls == []
