"""core/attention_merge.py: MAD merge/split indexing, merged self/cross attention, τ schedule."""
import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from hypothesis import given, settings
from hypothesis import strategies as st

from vista.core.attention_merge import (
    MAD_LAYOUT_KEY,
    MadLayout,
    block_scale,
    canvas_block_hw,
    mad_active,
    mad_attention_patch,
    mad_step_index,
    merge_tokens,
    merged_cross_attention,
    merged_self_attention,
    split_tokens,
    window_token_index,
)
from vista.core.checks import VistaInputError
from vista.core.windows import Window, crop_windows, plan_windows

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
    """Window tokens cropped from block-grid features: (B, C, H_s, W_s) → (B·N, h_s·w_s, C)."""
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
        assert layout.n_windows == 5

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

    def test_wrap_allows_windows_past_the_edge(self):
        assert MadLayout((Window(0, 12, 8, 8),), (8, 16), wrap_x=True).n_windows == 1


class TestBlockScale:
    @pytest.mark.parametrize("window, block, s", [((64, 64), (64, 64), 1), ((64, 96), (8, 12), 8),
                                                  ((60, 20), (8, 3), 8), ((12, 12), (3, 3), 4), ((6, 10), (3, 5), 2), ((6, 6), (1, 1), 8)])
    def test_smoke(self, window, block, s):
        assert block_scale(window, block) == s

    @pytest.mark.parametrize("window, block", [((64, 64), (7, 8)), ((64, 64), (0, 8)), ((8, 8), (16, 16))])
    def test_exception(self, window, block):
        with pytest.raises(VistaInputError, match="block_hw"):
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
        assert index.shape == (len(windows), 16) and grid == (4, 12)

    def test_matches_crop_windows(self):
        """The gather index is crop_windows of a canvas of token ids (wrap included)."""
        windows = plan_windows(12, 40, 12, 12, 8, 8, wrap_x=True, align=4)
        ids = torch.arange(3 * 10, dtype=torch.float64).reshape(1, 1, 3, 10)
        index, _ = window_token_index(windows, (12, 40), (3, 3))
        assert torch.equal(index.double(), window_tokens(ids, windows, 4)[..., 0])

    def test_exception(self):
        with pytest.raises(VistaInputError, match="empty"):
            window_token_index((), (8, 8), (1, 1))


class TestMergeTokens:
    def test_smoke(self, device):
        windows = plan_windows(8, 24, 8, 8, 4, 4)
        out = merge_tokens(torch.randn(2 * len(windows), 4, 3, device=device), windows, (8, 24), (2, 2))
        assert out.shape == (2, 2 * 6, 3) and out.device.type == device.type

    def test_uniform_average_over_overlaps(self):
        windows = (Window(0, 0, 1, 2), Window(0, 1, 1, 2))
        tokens = torch.tensor([[[1.0], [3.0]], [[5.0], [7.0]], [[0.0], [2.0]], [[4.0], [6.0]]])
        out = merge_tokens(tokens, windows, (1, 3), (1, 2))
        assert out[..., 0].tolist() == [[1.0, 4.0, 7.0], [0.0, 3.0, 6.0]]

    def test_wrap_continues_at_column_zero(self):
        windows = (Window(0, 0, 1, 2), Window(0, 2, 1, 2))
        tokens = torch.tensor([[[1.0], [2.0]], [[3.0], [5.0]]])
        assert merge_tokens(tokens, windows, (1, 3), (1, 2))[0, :, 0].tolist() == [3.0, 2.0, 3.0]

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
    def test_dtype_kept(self, dtype):
        windows = plan_windows(8, 16, 8, 8, 4, 4)
        assert merge_tokens(torch.randn(len(windows), 64, 2, dtype=dtype), windows, (8, 16), (8, 8)).dtype == dtype

    @pytest.mark.parametrize(
        "shape, match",
        [((5, 4, 3), "multiple of the 3 windows"), ((3, 5, 3), "4 tokens"), ((3, 4), "shape"), ((0, 4, 3), "multiple")],
    )
    def test_exception(self, shape, match):
        windows = plan_windows(8, 16, 8, 8, 4, 4)
        with pytest.raises(VistaInputError, match=match):
            merge_tokens(torch.zeros(shape), windows, (8, 16), (2, 2))

    def test_chunk_of_the_plan_raises(self):
        """A call holding only part of the plan leaves canvas tokens without a window."""
        chunk = plan_windows(8, 24, 8, 8, 4, 4)[:2]
        with pytest.raises(VistaInputError, match="covered by no window"):
            merge_tokens(torch.zeros(2, 64, 1), chunk, (8, 24), (8, 8))

    def test_misaligned_offsets_raise(self):
        """Offsets that round apart at a deep block leave a block column uncovered."""
        windows = (Window(0, 0, 12, 12), Window(0, 9, 12, 12), Window(0, 18, 12, 12))
        with pytest.raises(VistaInputError, match=r"\(0, 7\).*covered by no window"):
            merge_tokens(torch.zeros(3, 9, 1), windows, (12, 30), (3, 3))


class TestSplitTokens:
    def test_shape_sample_major(self):
        windows = plan_windows(4, 8, 4, 4, 4, 4)
        canvas = torch.arange(2 * 32, dtype=torch.float32).reshape(2, 32, 1)
        out = split_tokens(canvas, windows, (4, 8), (4, 4))
        assert out.shape == (4, 16, 1)
        assert out[1, 0, 0] == 4 and out[2, 0, 0] == 32  # b·N + n: sample 0 window 1, sample 1 window 0

    @pytest.mark.parametrize("shape, match", [((1, 31, 1), "32 tokens"), ((32, 1), "shape")])
    def test_exception(self, shape, match):
        with pytest.raises(VistaInputError, match=match):
            split_tokens(torch.zeros(shape), plan_windows(4, 8, 4, 4, 4, 4), (4, 8), (4, 4))

    @settings(max_examples=60, deadline=None)
    @given(aligned_plans(), st.integers(1, 2))
    def test_merge_split_roundtrip(self, plan, batch):
        windows, canvas_hw, s = plan
        block_hw = (windows[0].h // s, windows[0].w // s)
        Hs, Ws = canvas_block_hw(canvas_hw, s)
        x = torch.randn(batch, Hs * Ws, 3, dtype=torch.float64)
        y = merge_tokens(split_tokens(x, windows, canvas_hw, block_hw), windows, canvas_hw, block_hw)
        torch.testing.assert_close(y, x, rtol=1e-12, atol=1e-12)


class TestMergedSelfAttention:
    def test_one_window_is_plain_attention(self, device):
        q, k, v = torch.randn(3, 2, 6 * 10, 8, device=device)
        attention = make_attention(2)
        out = merged_self_attention(q, k, v, (Window(0, 0, 12, 20),), (12, 20), (6, 10), attention)
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
        block_hw = (-(-window[0] // scale), -(-window[1] // scale))
        out = merged_self_attention(tok @ wq, tok @ wk, tok @ wv, windows, canvas, block_hw, attention)
        full = grid_tokens(feats)
        reference = attention(full @ wq, full @ wk, full @ wv)
        reference = rearrange(reference, "b (h w) c -> b c h w", h=Hs)
        torch.testing.assert_close(out, window_tokens(reference, windows, scale))

    def test_exception(self):
        windows = (Window(0, 0, 4, 4),)
        q = torch.zeros(1, 16, 4)
        with pytest.raises(VistaInputError, match="self-attention k"):
            merged_self_attention(q, torch.zeros(1, 20, 4), q, windows, (4, 4), (4, 4), make_attention(1))


class TestMergedCrossAttention:
    def test_one_window_is_plain_attention(self, device):
        q = torch.randn(2, 6 * 10, 8, device=device)
        k, v = torch.randn(2, 2, 7, 8, device=device)
        attention = make_attention(2)
        out = merged_cross_attention(q, k, v, (Window(0, 0, 6, 10),), (6, 10), (6, 10), attention)
        torch.testing.assert_close(out, attention(q, k, v), rtol=0, atol=0)

    @pytest.mark.parametrize("scale, wrap", [(1, False), (2, False), (1, True)])
    def test_non_overlapping_equals_per_window_attention(self, scale, wrap):
        """Cross-attention is per query: with disjoint windows the merge changes nothing."""
        windows = plan_windows(8, 32, 8, 8, 8, 8, wrap_x=wrap)
        if wrap:
            windows = tuple(Window(w.y, w.x + 4, w.h, w.w) for w in windows)  # every window shifted: the last wraps
        n, t = len(windows), (8 // scale) ** 2
        q = torch.randn(3 * n, t, 8, dtype=torch.float64)
        k, v = (torch.randn(3, 5, 8, dtype=torch.float64).repeat_interleave(n, 0) for _ in range(2))
        attention = make_attention(4)
        out = merged_cross_attention(q, k, v, windows, (8, 32), (8 // scale, 8 // scale), attention)
        torch.testing.assert_close(out, attention(q, k, v))

    def test_different_prompts_per_window_raise(self):
        windows = plan_windows(4, 8, 4, 4, 4, 4)
        q, k = torch.zeros(2, 16, 4), torch.randn(2, 3, 4)
        with pytest.raises(VistaInputError, match="same prompt"):
            merged_cross_attention(q, k, k, windows, (4, 8), (4, 4), make_attention(1))

    @pytest.mark.parametrize("k_shape, match", [((3, 3, 4), "batches must match"), ((2, 4), "shape")])
    def test_exception(self, k_shape, match):
        windows = plan_windows(4, 8, 4, 4, 4, 4)
        with pytest.raises(VistaInputError, match=match):
            merged_cross_attention(torch.zeros(2, 16, 4), torch.zeros(k_shape), torch.zeros(2, 3, 4),
                                   windows, (4, 8), (4, 4), make_attention(1))


class TestMadStepIndex:
    def test_steps_and_substeps(self):
        sigmas = [14.6, 7.0, 3.0, 1.0, 0.0]
        assert [mad_step_index(s, sigmas) for s in sigmas[:-1]] == [0, 1, 2, 3]
        assert mad_step_index(5.0, sigmas) == 1  # a sub-step between sigma_1 and sigma_2
        assert mad_step_index(20.0, sigmas) == 0 and mad_step_index(0.0, sigmas) == 3

    def test_tensor_inputs(self):
        sigmas = torch.linspace(10, 0, 11, dtype=torch.float32)
        assert mad_step_index(sigmas[4] * torch.ones(6), sigmas) == 4

    def test_exception(self):
        with pytest.raises(VistaInputError, match="sample_sigmas"):
            mad_step_index(1.0, [1.0])


class TestMadActive:
    def test_paper_default_first_15_of_50(self):
        sigmas = torch.linspace(14.6, 0, 51)
        active = [mad_active(sigmas[i], sigmas, 0.3) for i in range(50)]
        assert active == [True] * 15 + [False] * 35

    @pytest.mark.parametrize("tau, expected", [(0.0, False), (1.0, True)])
    def test_never_and_always(self, tau, expected):
        sigmas = torch.linspace(14.6, 0, 21)
        assert all(mad_active(s, sigmas, tau) is expected for s in sigmas[:-1])

    @pytest.mark.parametrize("tau", [-0.1, 1.5])
    def test_exception(self, tau):
        with pytest.raises(VistaInputError, match="tau"):
            mad_active(1.0, [1.0, 0.0], tau)


def fake_optimized_attention(q, k, v, heads, attn_precision=None, transformer_options=None):
    """ComfyUI's optimized_attention signature over a plain softmax attention."""
    return make_attention(heads)(q, k, v)


class TestMadAttentionPatch:
    windows = plan_windows(8, 24, 8, 8, 4, 4)

    def extra_options(self, step, layout=True):
        sigmas = torch.linspace(10, 0, 11)
        extra = {"n_heads": 2, "activations_shape": [2 * len(self.windows), 8, 4, 4],
                 "sigmas": sigmas[step].repeat(2 * len(self.windows)), "sample_sigmas": sigmas}
        if layout:
            extra[MAD_LAYOUT_KEY] = MadLayout(self.windows, (8, 24))
        return extra

    def qkv(self, cross):
        n = len(self.windows)
        q = torch.randn(2 * n, 16, 8, dtype=torch.float64)
        kv = torch.randn(2, 2, 5 if cross else 16, 8, dtype=torch.float64)
        return (q, *(t.repeat_interleave(n, 0) for t in kv)) if cross else (q, *torch.randn(2, 2 * n, 16, 8, dtype=torch.float64))

    @pytest.mark.parametrize("cross", [False, True])
    def test_active_steps_merge(self, cross):
        q, k, v = self.qkv(cross)
        out = mad_attention_patch(cross, 0.3, fake_optimized_attention)(q, k, v, self.extra_options(2))
        merged = merged_cross_attention if cross else merged_self_attention
        torch.testing.assert_close(out, merged(q, k, v, self.windows, (8, 24), (4, 4), make_attention(2)))

    @pytest.mark.parametrize("cross", [False, True])
    @pytest.mark.parametrize("step, layout", [(3, True), (0, False)])
    def test_otherwise_plain_attention(self, cross, step, layout):
        """Past tau, or without a layout (no Vista window wrapper): exactly the host's attention."""
        q, k, v = self.qkv(cross)
        out = mad_attention_patch(cross, 0.3, fake_optimized_attention)(q, k, v, self.extra_options(step, layout))
        torch.testing.assert_close(out, make_attention(2)(q, k, v), rtol=0, atol=0)

    def test_exception(self):
        with pytest.raises(VistaInputError, match="tau"):
            mad_attention_patch(False, 2.0, fake_optimized_attention)
