// Vista: the window geometry of core/canvas/windows.py (and its users) in the browser, for the node previews.
// Pure functions, no DOM and no ComfyUI imports. Sizes are latent px unless a name says px.
// Every function mirrors a Python function named in its comment; tests/browser compares them on the host.

export const LATENT_FACTOR = 8; // image px per latent px (SD1.x/2.x, SDXL, SD3, Flux: what EmptyLatentImage uses)
export const PREVIEW_CANVAS_PX = [2048, 512]; // canvas shown when no latent size can be read from the graph
export const STRIDE_MIN_PX = 8; // nodes/_common.py STRIDE_MIN_PX
export const WINDOW_PX = [64, 16384]; // nodes/_common.py WINDOW_PX

/** core/canvas/windows.py axis_offsets: window start offsets along one axis that cover 0..size-1. */
export function axisOffsets(size, window, stride, wrap = false, align = 1) {
  if (window < 1) throw new RangeError(`window must be >= 1 latent px, got ${window}`);
  if (window > size) throw new RangeError(`window (${window} latent px) must not be larger than the canvas (${size} latent px)`);
  if (stride < 1 || stride > window) throw new RangeError(`stride must be in [1, window=${window}] latent px, got ${stride}`);
  const step = Math.max(align, Math.floor(stride / align) * align);
  if (step > window) throw new RangeError(`stride ${stride} rounded to a multiple of ${align} exceeds the window ${window}`);
  if (wrap) return Array.from({ length: Math.ceil(size / step) }, (_, i) => i * step);
  if (window === size) return [0];
  const offsets = [];
  for (let o = 0; o < size - window; o += step) offsets.push(o);
  offsets.push(size - window);
  return offsets;
}

/** core/canvas/windows.py plan_windows: windows {y, x, h, w} in row-major order (x + w may pass the width when wrapped). */
export function planWindows(height, width, windowH, windowW, strideH, strideW, wrapX = false, align = 1) {
  const ys = axisOffsets(height, windowH, strideH, false, align);
  const xs = axisOffsets(width, windowW, strideW, wrapX, align);
  return ys.flatMap((y) => xs.map((x) => ({ y, x, h: windowH, w: windowW })));
}

/**
 * nodes/_common.py check_pixels + check_strides: the node's own refusals, as a message (null when fine).
 * spec: {window_width, window_height, stride_x, stride_y} in image px.
 */
export function specError(node, spec, factor = LATENT_FACTOR) {
  for (const name of ["window_width", "window_height", "stride_x", "stride_y"]) {
    const px = spec[name];
    if (!Number.isFinite(px) || px <= 0 || px % factor) return `${node}: ${name}=${px} px must be a positive multiple of ${factor} px`;
  }
  for (const [s, w] of [["stride_x", "window_width"], ["stride_y", "window_height"]]) {
    if (spec[s] > spec[w]) return `${node}: ${s}=${spec[s]} px must be at most ${w}=${spec[w]} px`;
  }
  return null;
}

/**
 * nodes/_common.py WindowSpec.plan: the plan for a canvas of latent size [H, W], windows clamped to the canvas.
 * Returns {windows, windowHW, strideHW} in latent px.
 */
export function specPlan(spec, height, width, align = 1, factor = LATENT_FACTOR) {
  const windowH = Math.min(Math.floor(spec.window_height / factor), height);
  const windowW = Math.min(Math.floor(spec.window_width / factor), width);
  const strideH = Math.min(Math.floor(spec.stride_y / factor), windowH);
  const strideW = Math.min(Math.floor(spec.stride_x / factor), windowW);
  const windows = planWindows(height, width, windowH, windowW, strideH, strideW, !!spec.wrap_x, align);
  return { windows, windowHW: [windowH, windowW], strideHW: [strideH, strideW] };
}

/** nodes/_common.py WindowSpec.notices: windows clamped to the canvas, strides snapped to the align grid. */
export function specNotices(spec, height, width, align = 1, reason = "", factor = LATENT_FACTOR) {
  const out = [];
  const axes = [["window_height", spec.window_height, "stride_y", spec.stride_y, height, "height"],
                ["window_width", spec.window_width, "stride_x", spec.stride_x, width, "width"]];
  for (const [wname, wpx, sname, spx, size, side] of axes) {
    if (wpx > size * factor) out.push(`${wname}=${wpx} px > canvas ${side} ${size * factor} px: one window of ${size * factor} px`);
    const stride = Math.min(Math.floor(spx / factor), Math.floor(wpx / factor), size);
    const step = Math.max(align, Math.floor(stride / align) * align);
    if (align > 1 && step !== stride) out.push(`${sname}=${spx} px snapped to ${step * factor} px (${reason || "UNet grid"})`);
  }
  return out;
}

/** core/guidance/syncdiffusion.py anchor_window: index of the window whose centre is nearest the canvas centre. */
export function anchorWindow(windows, height, width) {
  const cy = (height - 1) / 2;
  const cx = (width - 1) / 2;
  let best = 0;
  let bestDist = Infinity;
  windows.forEach((w, i) => {
    const d = (w.y + (w.h - 1) / 2 - cy) ** 2 + (w.x + (w.w - 1) / 2 - cx) ** 2;
    if (d < bestDist) [best, bestDist] = [i, d];
  });
  return best;
}

/**
 * core/guidance/msd.py level_plans: per level k the canvas H/2^k x W/2^k and its windows (same window and stride;
 * offsets even on every level but the lowest). Throws like level_plans when a level cannot hold a window.
 */
export function msdLevels(height, width, windowHW, strideHW, levels, wrapX = false) {
  const div = 2 ** (levels - 1);
  if (height % div || width % div) {
    throw new RangeError(`the canvas ${height}x${width} latent px must be divisible by 2^(levels-1) = ${div}`);
  }
  const out = [];
  for (let k = 0; k < levels; k++) {
    const [h, w] = [height >> k, width >> k];
    if (h < windowHW[0] || w < windowHW[1]) {
      throw new RangeError(`level ${k} of ${levels} is ${h}x${w} latent px, smaller than the ${windowHW[0]}x${windowHW[1]} window`);
    }
    const align = k < levels - 1 ? 2 : 1;
    out.push({ canvasHW: [h, w], windows: planWindows(h, w, ...windowHW, ...strideHW, wrapX, align) });
  }
  return out;
}

/**
 * Zoom stack (Generative Powers of Ten §3): level i shows the central 1/p^i of level 0.
 * Returns [x, y, w, h] rectangles in the units of [width, height], level 0 first.
 */
export function zoomLevels(p, levels, width, height) {
  return Array.from({ length: levels }, (_, i) => {
    const s = p ** -i;
    return [(width * (1 - s)) / 2, (height * (1 - s)) / 2, width * s, height * s];
  });
}
