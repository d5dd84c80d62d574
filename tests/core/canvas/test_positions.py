"""core/canvas/positions.py: window → canvas positions of DiT image tokens (issue [T] item 1).

The invariant: a window's token ``(r, c)`` at latent offset ``(y, x)`` gets the id the whole canvas, patchified as one
image by the same rule, gives the patch at canvas row ``r + y/p``, column ``c + x/p``. The reference ids below are
built the way the hosts' ``process_img`` builds them (Flux: ``0 … n-1``; Qwen-Image: centred, ``- n // 2``).
"""
import pytest
import torch
from einops import repeat

from vista.core.canvas.positions import GridOrigin, shift_image_ids, text_shift, window_shifts
from vista.core.canvas.windows import Window, crop_windows, plan_windows
from vista.core.checks import VistaInputError

FLUX, QWEN = GridOrigin(), GridOrigin(centred=True, text_after_image=True)


def host_ids(tokens_hw, grid: GridOrigin) -> torch.Tensor:
    """(h·w, 3) ids of an image of ``tokens_hw`` tokens, as the hosts' process_img makes them (index 0)."""
    h, w = tokens_hw
    ids = torch.zeros(h, w, 3)
    ids[..., 1] = torch.arange(h, dtype=torch.float32)[:, None] + grid.origin(h)
    ids[..., 2] = torch.arange(w, dtype=torch.float32)[None, :] + grid.origin(w)
    return ids.reshape(h * w, 3)


def as_latent(ids: torch.Tensor, tokens_hw, patch: int) -> torch.Tensor:
    """Ids of a token grid spread on the latent grid: (1, 3, h·p, w·p), each patch's id on its p×p pixels."""
    h, w = tokens_hw
    grid = ids.reshape(h, w, 3).permute(2, 0, 1)[None]
    return repeat(grid, "b k h w -> b k (h p) (w q)", p=patch, q=patch)


@pytest.mark.parametrize("grid", [FLUX, QWEN], ids=["flux", "qwen"])
@pytest.mark.parametrize("canvas_hw, window, stride", [((16, 48), 16, 8), ((32, 40), 16, 8), ((24, 24), 8, 4)])
def test_window_ids_become_the_canvas_ids(grid, canvas_hw, window, stride):
    """Every window token ends at the id of the canvas patch it covers (offsets on the patch grid)."""
    patch = 2
    windows = plan_windows(*canvas_hw, window, window, stride, stride)
    canvas_tokens, window_tokens = (canvas_hw[0] // patch, canvas_hw[1] // patch), (window // patch, window // patch)
    canvas_map = as_latent(host_ids(canvas_tokens, grid), canvas_tokens, patch)
    expected = crop_windows(canvas_map, windows)[:, :, ::patch, ::patch]  # (n, 3, h_tok, w_tok)
    ids = repeat(host_ids(window_tokens, grid), "l k -> n l k", n=len(windows))
    shifted = shift_image_ids(ids, window_shifts(windows, patch, canvas_tokens, window_tokens, grid), ids.shape[1])
    assert torch.equal(shifted.reshape(len(windows), *window_tokens, 3).permute(0, 3, 1, 2)[:, 1:], expected[:, 1:])


def test_rows_follow_crop_windows_order():
    """Row ``g·n·B + i·B + b`` carries window ``i``'s shift, as crop_windows lays the batch out."""
    windows = [Window(0, 0, 4, 4), Window(0, 2, 4, 4), Window(2, 4, 4, 4)]
    shifts = window_shifts(windows, 2, (3, 4), (2, 2), groups=2, batch=3)
    assert shifts.shape == (2 * 3 * 3, 2)
    canvas = torch.arange(6.0).view(6, 1, 1, 1).expand(6, 1, 6, 8)  # rows 0..5 = (g, b)
    order = crop_windows(canvas, windows, groups=2)[:, 0, 0, 0]
    for row, sample in enumerate(order.tolist()):
        window = (row % 9) // 3
        assert shifts[row].tolist() == [windows[window].y / 2, windows[window].x / 2], (row, sample)


def test_off_grid_offsets_shift_by_fractions():
    """An offset that is not a whole patch moves by a fraction of a token (RoPE takes real positions)."""
    assert window_shifts([Window(3, 5, 4, 4)], 2, (8, 8), (2, 2)).tolist() == [[1.5, 2.5]]


def test_wrapped_window_keeps_counting_columns():
    assert window_shifts([Window(0, 14, 4, 4)], 2, (2, 8), (2, 2)).tolist() == [[0.0, 7.0]]


def test_reference_tokens_and_other_axes_keep_their_ids():
    ids = torch.arange(2 * 6 * 3, dtype=torch.bfloat16).view(2, 6, 3)
    out = shift_image_ids(ids, torch.tensor([[1.0, 2.0], [3.0, 4.0]]), 4)
    assert out.dtype == torch.float32
    assert torch.equal(out[:, 4:], ids[:, 4:].float()) and torch.equal(out[..., 0], ids[..., 0].float())
    assert torch.equal(out[:, :4, 1] - ids[:, :4, 1].float(), torch.tensor([[1.0] * 4, [3.0] * 4]))
    assert torch.equal(out[:, :4, 2] - ids[:, :4, 2].float(), torch.tensor([[2.0] * 4, [4.0] * 4]))


def test_one_window_covering_the_canvas_is_unmoved():
    """The identity case: one window = the canvas → zero shift for both conventions, text unmoved."""
    for grid in (FLUX, QWEN):
        assert window_shifts([Window(0, 0, 8, 12)], 2, (4, 6), (4, 6), grid).abs().max() == 0
        assert text_shift(grid, (4, 6), (4, 6)) == 0


def test_text_follows_the_canvas_only_where_the_family_puts_it_after_the_image():
    assert text_shift(FLUX, (4, 24), (4, 4)) == 0
    assert text_shift(QWEN, (4, 24), (4, 4)) == 12 - 2


def test_half_precision_would_lose_the_positions():
    """Why shift_image_ids returns float32: bf16 cannot hold 257."""
    ids = torch.zeros(1, 1, 3, dtype=torch.bfloat16)
    assert shift_image_ids(ids, torch.tensor([[0.0, 257.0]]), 1)[0, 0, 2].item() == 257.0
    assert (ids + 257.0)[0, 0, 2].item() != 257.0


@pytest.mark.parametrize("call, message", [
    (lambda: window_shifts([], 2, (1, 1), (1, 1)), "windows must not be empty"),
    (lambda: window_shifts([Window(0, 0, 2, 2)], 0, (1, 1), (1, 1)), "patch must be >= 1"),
    (lambda: shift_image_ids(torch.zeros(2, 4, 3), torch.zeros(3, 2), 4), r"shifts must have shape \(2, 2\)"),
    (lambda: shift_image_ids(torch.zeros(2, 4, 3), torch.zeros(2, 2), 5), r"image_tokens must be in \[1, 4\]"),
    (lambda: shift_image_ids(torch.zeros(4, 3), torch.zeros(4, 2), 1), "img_ids must have shape"),
])
def test_bad_input_is_named(call, message):
    with pytest.raises(VistaInputError, match=message):
        call()
