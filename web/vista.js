// Vista: node colours, a live preview of the window grid / zoom levels inside the Vista nodes, and warning toasts.
//
// The preview is a canvas-drawn widget (serialize: false, so workflows and prompts are unchanged). It reads the
// canvas size from the latent the sampler gets (EmptyLatentImage-like nodes with width/height widgets, followed
// upstream through the graph), else shows a preview size. The plan is web/vista_grid.js, a line-by-line mirror of
// core/canvas/windows.py. The drawn state is kept on node.vistaGrid for tests.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import {
  LATENT_FACTOR, PREVIEW_CANVAS_PX, anchorWindow, msdLevels, specError, specNotices, specPlan, zoomLevels,
} from "./vista_grid.js";

const VISTA_COLOR = "#2d3f5c";
const VISTA_BGCOLOR = "#1e2a3d";
const WINDOW_NODES = new Set(["VistaTiledDiffusion", "VistaLatentFusionSampler"]);
const GUIDANCE_NODES = new Set(["VistaSyncDiffusion", "VistaMultiScaleDiffusion"]);
const ZOOM_NODES = new Set(["VistaZoomSettings", "VistaZoomStackSampler"]);
const PREVIEW = "vista_preview";
const MIN_HEIGHT = { windows: 120, zoom: 150 };
const DEFAULT_SPEC = { window_width: 512, window_height: 512, stride_x: 128, stride_y: 128, wrap_x: false, window_batch_size: 4 };
const PREVIEW_ZOOM = { p: 2, levels: 4, canvas: [512, 512] };
const MAX_DRAWN = 2000; // windows drawn at most (the count is always exact)
const TOAST_LIFE_MS = 12000;

// --- graph walking (works on LiteGraph nodes of both supported frontends) -----------------------------------
const widgetValue = (node, name) => node?.widgets?.find((w) => w.name === name)?.value;
const typeOf = (node) => node?.comfyClass ?? node?.type;
const hasInput = (node, name) => !!node?.inputs?.some((i) => i.name === name);
const hasOutput = (node, type) => !!node?.outputs?.some((o) => o.type === type);

/** The node feeding input `name` (through legacy Reroute nodes), or null. */
function upstream(node, name) {
  const slot = node?.inputs?.findIndex((i) => i.name === name) ?? -1;
  if (slot < 0) return null;
  let source = node.getInputNode(slot);
  for (let hops = 0; source?.type === "Reroute" && hops < 32; hops++) source = source.getInputNode(0);
  return source ?? null;
}

/** Nodes fed by this node's outputs of `type` (through legacy Reroute nodes). */
function downstream(node, type, depth = 0) {
  const out = [];
  (node?.outputs ?? []).forEach((output, slot) => {
    if (node.type !== "Reroute" && output.type !== type) return;
    for (const next of node.getOutputNodes(slot) ?? []) {
      if (next.type === "Reroute" && depth < 32) out.push(...downstream(next, type, depth + 1));
      else out.push(next);
    }
  });
  return out;
}

/** Samplers (nodes with a latent_image input) that sample with this MODEL, and the guider between, if any. */
function samplersOfModel(node, depth = 0) {
  const uses = [];
  for (const next of downstream(node, "MODEL")) {
    if (hasInput(next, "latent_image")) uses.push({ sampler: next, guider: null });
    else if (hasOutput(next, "GUIDER")) {
      for (const s of downstream(next, "GUIDER")) if (hasInput(s, "latent_image")) uses.push({ sampler: s, guider: next });
    } else if (hasOutput(next, "MODEL") && depth < 32) uses.push(...samplersOfModel(next, depth + 1));
  }
  return uses;
}

/** Samplers (SamplerCustom / SamplerCustomAdvanced) that run this SAMPLER. */
function samplersOfSampler(node) {
  return downstream(node, "SAMPLER").filter((s) => hasInput(s, "latent_image"))
    .map((s) => ({ sampler: s, guider: upstream(s, "guider") }));
}

/** Canvas size in image px from the sampler's latent: the first node upstream with width/height widgets. */
function latentSize(sampler) {
  let node = upstream(sampler, "latent_image");
  for (let hops = 0; node && hops < 16; hops++) {
    const [width, height] = [widgetValue(node, "width"), widgetValue(node, "height")];
    if (typeof width === "number" && typeof height === "number") {
      const batch = widgetValue(node, "batch_size");
      return { width, height, batch: typeof batch === "number" ? batch : 1, source: node.type };
    }
    if (node.type !== "SetLatentNoiseMask") break; // nodes known to keep the latent's size
    node = upstream(node, "samples");
  }
  return null;
}

/** Classifier-free guidance scale of one use (null when it cannot be read: say "per conditioning"). */
function cfgOf({ sampler, guider }) {
  const own = widgetValue(sampler, "cfg");
  if (typeof own === "number") return own;
  if (guider?.type === "BasicGuider") return 1;
  const scale = widgetValue(guider, "cfg");
  return typeof scale === "number" ? scale : null;
}

/** The model chain of one use, walked upstream: a Vista MAD patch (tau > 0) on it, and the checkpoint name. */
function modelChain({ sampler, guider }) {
  let node = upstream(sampler, "model") ?? upstream(guider, "model");
  let mad = false;
  let checkpoint = "";
  for (let hops = 0; node && hops < 32; hops++) {
    if (node.type === "VistaMADAttention" && Number(widgetValue(node, "tau")) > 0) mad = true;
    checkpoint ||= String(widgetValue(node, "ckpt_name") ?? widgetValue(node, "unet_name") ?? "");
    node = upstream(node, "model");
  }
  // nodes/_common.py unet_alignment: 2^(levels-1) latent px, 8 on SD1.x/2.x (4 UNet levels), 4 on SDXL (3 levels).
  return { mad, grid: /xl/i.test(checkpoint) ? 4 : 8 };
}

// --- preview state ---------------------------------------------------------------------------------------------
/** Everything a window preview depends on (cheap: a few graph hops). */
function windowInputs(node) {
  let owner = node;
  let guidance = null;
  if (GUIDANCE_NODES.has(typeOf(node))) {
    guidance = node;
    owner = downstream(node, "VISTA_GUIDANCE").find((n) => typeOf(n) === "VistaLatentFusionSampler") ?? null;
  } else if (typeOf(node) === "VistaLatentFusionSampler") {
    guidance = upstream(node, "guidance");
  }
  const spec = owner ? Object.fromEntries(Object.keys(DEFAULT_SPEC).map((k) => [k, widgetValue(owner, k)]))
    : { ...DEFAULT_SPEC };
  const uses = !owner ? [] : typeOf(owner) === "VistaTiledDiffusion" ? samplersOfModel(owner)
    : samplersOfSampler(owner);
  const use = uses[0] ?? null;
  const size = use && latentSize(use.sampler);
  const chain = use ? modelChain(use) : { mad: false, grid: 8 };
  return {
    kind: "windows", node: typeOf(node), owner: owner ? typeOf(owner) : null, connected: !!owner, spec,
    sampler: use?.sampler.type ?? null,
    canvas: size ? [size.width, size.height] : [...PREVIEW_CANVAS_PX], source: size ? size.source : "preview",
    batch: size?.batch ?? 1, cfg: use ? cfgOf(use) : null, mad: chain.mad, grid: chain.grid,
    guidance: typeOf(guidance) ?? null,
    msdLevels: typeOf(guidance) === "VistaMultiScaleDiffusion" ? widgetValue(guidance, "levels") : null,
  };
}

function windowState(inputs) {
  const { spec, canvas, batch, cfg } = inputs;
  const f = LATENT_FACTOR;
  const [H, W] = [Math.floor(canvas[1] / f), Math.floor(canvas[0] / f)];
  // nodes/latent_fusion.py alignment / nodes/tiled_diffusion.py align_for: the UNet grid under MAD, even under MSD.
  const needs = [];
  if (inputs.mad) needs.push([inputs.grid, `Vista MAD; ${inputs.grid === 4 ? "SDXL" : "SD1.x/2.x"} UNet grid assumed`]);
  if (inputs.guidance === "VistaMultiScaleDiffusion") needs.push([2, "Multi-Scale Diffusion"]);
  const align = needs.length ? Math.max(...needs.map(([a]) => a)) : 1;
  const reason = needs.filter(([a]) => a > 1).map(([, why]) => why).join(" and ");
  const state = { ...inputs, factor: f, latent: [W, H], align, windows: [], evals: null, calls: null, anchor: null,
                  notes: [], error: null };
  const error = specError((inputs.owner ?? "").replace(/([a-z])([A-Z])/g, "$1 $2"), spec);
  if (error) return { ...state, error, text: [error] };
  try {
    const plan = specPlan(spec, H, W, align);
    state.windows = plan.windows.map((w) => [w.x * f, w.y * f, w.w * f, w.h * f]);
    state.notes = specNotices(spec, H, W, align, reason);
    const n = plan.windows.length;
    const xs = [...new Set(plan.windows.map((w) => w.x))];
    const ys = [...new Set(plan.windows.map((w) => w.y))];
    const lanes = (offsets, size) => (offsets.length > 1 ? Math.min(8, Math.ceil(size / (offsets[1] - offsets[0]))) : 1);
    state.columns = xs.length;
    state.lanes = [lanes(xs, plan.windowHW[1]), lanes(ys, plan.windowHW[0])];
    state.cfgFactor = cfg == null ? null : Math.abs(cfg - 1) < 1e-9 ? 1 : 2;
    state.evals = n * (state.cfgFactor ?? 1) * batch;
    state.calls = Math.ceil(n / Math.max(1, spec.window_batch_size || 1));
    if (inputs.guidance === "VistaSyncDiffusion") state.anchor = anchorWindow(plan.windows, H, W);
    if (inputs.msdLevels) {
      state.levels = msdLevels(H, W, plan.windowHW, plan.strideHW, inputs.msdLevels, !!spec.wrap_x)
        .map((l) => ({ canvas: [l.canvasHW[1] * f, l.canvasHW[0] * f], windows: l.windows.length }));
    }
  } catch (e) {
    state.error = e.message; // a plan core/ would refuse (e.g. an MSD level smaller than a window)
  }
  state.text = windowText(state);
  return state;
}

function windowText(s) {
  if (s.error) return [s.error];
  const n = s.windows.length;
  const where = s.source === "preview" ? `preview ${s.canvas[0]}×${s.canvas[1]} px (no latent size found)`
    : `${s.canvas[0]}×${s.canvas[1]} px from ${s.source}${s.batch > 1 ? ` ×${s.batch}` : ""}`;
  const cfg = s.cfgFactor == null ? " per conditioning" : s.cfgFactor === 2 ? ` (CFG ${s.cfg}: ×2)` : " (cfg 1)";
  const calls = `${s.calls} call${s.calls === 1 ? "" : "s"} of ≤${s.spec.window_batch_size}`;
  const lines = [where + (s.connected ? "" : " · not linked to a sampler: default windows"),
                 `${n} windows, ${s.evals} model evaluations per step${cfg} · ${calls}`
                 + (n > MAX_DRAWN ? ` · first ${MAX_DRAWN} drawn` : "")];
  if (s.anchor != null) lines.push(`SyncDiffusion anchor: window ${s.anchor + 1} (highlighted)`);
  if (s.levels) lines.push("MSD levels: " + s.levels.map((l) => `${l.canvas[0]}×${l.canvas[1]}: ${l.windows}`).join(" · "));
  return lines.concat(s.notes);
}

function zoomInputs(node) {
  const settings = typeOf(node) === "VistaZoomSettings" ? node : upstream(node, "zoom");
  const known = typeOf(settings) === "VistaZoomSettings";
  let size = null;
  if (typeOf(node) === "VistaZoomStackSampler") {
    const use = samplersOfSampler(node)[0];
    size = use ? latentSize(use.sampler) : null;
  } else {
    const latent = downstream(node, "INT").find((n) => typeof widgetValue(n, "width") === "number");
    if (latent) size = { width: widgetValue(latent, "width"), height: widgetValue(latent, "height"), source: latent.type };
  }
  return {
    kind: "zoom", node: typeOf(node),
    zoom: known ? Number(widgetValue(settings, "zoom_factor")) : PREVIEW_ZOOM.p,
    levels: known ? Number(widgetValue(settings, "levels")) : PREVIEW_ZOOM.levels,
    canvas: size ? [size.width, size.height] : [...PREVIEW_ZOOM.canvas], source: size ? size.source : "preview",
    connected: known,
  };
}

function zoomState(inputs) {
  const { zoom: p, levels, canvas } = inputs;
  const rects = zoomLevels(p, levels, canvas[0], canvas[1]);
  const deepest = p ** (levels - 1);
  const text = [
    `${levels} levels, zoom ×${p} per level: the deepest shows 1/${deepest} of level 0`,
    (inputs.source === "preview" ? `preview ${canvas[0]}×${canvas[1]} px` : `${canvas[0]}×${canvas[1]} px from ${inputs.source}`)
      + (inputs.connected ? "" : " · not linked to Vista Zoom Settings: preview p=2, 4 levels"),
  ];
  return { ...inputs, rects, text, error: null };
}

/** Recompute node.vistaGrid when anything it depends on changed; true when it did. */
function refresh(node) {
  const inputs = ZOOM_NODES.has(typeOf(node)) ? zoomInputs(node) : windowInputs(node);
  const key = JSON.stringify(inputs);
  if (key === node.vistaGridKey) return false;
  node.vistaGridKey = key;
  const version = (node.vistaGrid?.version ?? 0) + 1;
  node.vistaGrid = { ...(inputs.kind === "zoom" ? zoomState(inputs) : windowState(inputs)), version };
  return true;
}

// --- drawing ---------------------------------------------------------------------------------------------------
const LINE = 13;

function drawWindows(ctx, s, x0, y0, scale) {
  const W = s.latent[0] * s.factor; // a wrapped window continues at column 0 (modulo the latent width)
  const parts = ([x, y, w, h]) => (x + w <= W ? [[x, y, w, h]] : [[x, y, W - x, h], [0, y, x + w - W, h]]);
  const shown = s.windows.slice(0, MAX_DRAWN);
  ctx.fillStyle = "rgba(120, 170, 255, 0.10)"; // exact footprints: brighter where more windows overlap
  for (const win of shown) {
    for (const [x, y, w, h] of parts(win)) ctx.fillRect(x0 + x * scale, y0 + y * scale, w * scale, h * scale);
  }
  // Outlines, one colour per window, inset by lane so that overlapping windows stay apart (row-major plan).
  const [lanesX, lanesY] = s.lanes;
  const d = Math.max(1, Math.min(4, (s.windows[0]?.[3] ?? 0) * scale / (3 * lanesX)));
  shown.forEach((win, i) => {
    const [col, row] = [i % s.columns, Math.floor(i / s.columns)];
    const [ix, iy] = [(row % lanesY) * d, (col % lanesX) * d];
    const hue = (i * 47) % 360;
    ctx.strokeStyle = i === s.anchor ? "#ffd54a" : `hsl(${hue}, 80%, 65%)`;
    ctx.lineWidth = i === s.anchor ? 2 : 1;
    for (const [x, y, w, h] of parts(win)) {
      ctx.strokeRect(x0 + x * scale + ix + 0.5, y0 + y * scale + iy + 0.5,
                     Math.max(1, w * scale - 2 * ix - 1), Math.max(1, h * scale - 2 * iy - 1));
    }
  });
}

function drawZoom(ctx, s, x0, y0, scale) {
  s.rects.forEach(([x, y, w, h], i) => {
    if (w * scale < 1) return;
    ctx.strokeStyle = `hsl(${(200 + i * 40) % 360}, 80%, 65%)`;
    ctx.fillStyle = `hsla(${(200 + i * 40) % 360}, 80%, 60%, 0.12)`;
    ctx.fillRect(x0 + x * scale, y0 + y * scale, w * scale, h * scale);
    ctx.strokeRect(x0 + x * scale + 0.5, y0 + y * scale + 0.5, w * scale - 1, h * scale - 1);
    if (w * scale > 16) {
      ctx.fillStyle = ctx.strokeStyle;
      ctx.fillText(String(i), x0 + x * scale + 3, y0 + y * scale + 10);
    }
  });
}

function drawPreview(ctx, node, width, y, height) {
  refresh(node);
  const s = node.vistaGrid;
  const margin = 10;
  const text = s.text ?? [];
  const area = { w: width - 2 * margin, h: height - 8 - LINE * text.length };
  ctx.save();
  ctx.font = "10px sans-serif";
  ctx.textAlign = "left";
  ctx.textBaseline = "alphabetic";
  if (!s.error && area.h > 8 && area.w > 8) {
    const scale = Math.min(area.w / s.canvas[0], area.h / s.canvas[1]);
    const [dw, dh] = [s.canvas[0] * scale, s.canvas[1] * scale];
    const [x0, y0] = [margin + (area.w - dw) / 2, y + 4];
    ctx.fillStyle = "#111";
    ctx.fillRect(x0, y0, dw, dh);
    ctx.save();
    ctx.beginPath();
    ctx.rect(x0, y0, dw, dh);
    ctx.clip();
    if (s.kind === "zoom") drawZoom(ctx, s, x0, y0, scale);
    else drawWindows(ctx, s, x0, y0, scale);
    ctx.restore();
    ctx.strokeStyle = "#aaa";
    ctx.lineWidth = 1;
    ctx.strokeRect(x0 - 0.5, y0 - 0.5, dw + 1, dh + 1);
  }
  ctx.fillStyle = s.error ? "#ff7a7a" : "#bbb";
  const top = s.error ? y + 4 : y + height - 4 - LINE * text.length;
  text.forEach((line, i) => ctx.fillText(fit(ctx, line, width - 2 * margin), margin, top + LINE * (i + 1) - 3));
  ctx.restore();
}

function fit(ctx, line, maxWidth) {
  if (ctx.measureText(line).width <= maxWidth) return line;
  let cut = line.length;
  while (cut > 1 && ctx.measureText(line.slice(0, cut) + "…").width > maxWidth) cut--;
  return line.slice(0, cut) + "…";
}

function addPreview(node) {
  const kind = ZOOM_NODES.has(typeOf(node)) ? "zoom" : "windows";
  const widget = {
    name: PREVIEW,
    type: PREVIEW,
    value: null,
    serialize: false, // never in widgets_values
    options: { serialize: false }, // never in the prompt
    computeLayoutSize: () => ({ minHeight: MIN_HEIGHT[kind], maxHeight: 600, minWidth: 220 }),
    draw(ctx, drawnNode, width, y) {
      drawPreview(ctx, drawnNode, width, y, this.computedHeight || MIN_HEIGHT[kind]);
    },
  };
  node.addCustomWidget(widget);
  for (const w of node.widgets) {
    if (w.name === PREVIEW) continue;
    const callback = w.callback;
    w.callback = function (...args) {
      const out = callback?.apply(this, args);
      if (refresh(node)) node.setDirtyCanvas?.(true, false);
      return out;
    };
  }
  const onConnectionsChange = node.onConnectionsChange;
  node.onConnectionsChange = function (...args) {
    const out = onConnectionsChange?.apply(this, args);
    refresh(node);
    return out;
  };
  refresh(node);
}

/** Grow a node that is smaller than its widgets need (saved workflows predate the preview). */
function fitNode(node) {
  const min = node.computeSize();
  if (node.size[0] < min[0] || node.size[1] < min[1]) node.setSize([Math.max(node.size[0], min[0]), Math.max(node.size[1], min[1])]);
}

const hasPreview = (node) => [WINDOW_NODES, GUIDANCE_NODES, ZOOM_NODES].some((set) => set.has(typeOf(node)));

/** Changes elsewhere in the graph (a latent's width, a new link) are caught here, also for off-screen nodes. */
function watchGraph() {
  const nodes = app.canvas?.graph?._nodes ?? app.graph?._nodes ?? [];
  let changed = false;
  for (const node of nodes) {
    if (!hasPreview(node) || !node.vistaGrid) continue;
    if (refresh(node)) {
      changed = true;
      node.widgets?.find((w) => w.name === PREVIEW)?.triggerDraw?.();
    }
  }
  if (changed) app.graph?.setDirtyCanvas?.(true, false);
}

// --- warnings from the server (nodes/notify.py) ----------------------------------------------------------------
function showWarning({ node, message } = {}) {
  const summary = node || "Vista";
  const detail = message?.startsWith(`${summary}: `) ? message.slice(summary.length + 2) : message; // title = node
  console.warn(`[Vista] ${message}`);
  const toast = app.extensionManager?.toast;
  if (typeof toast?.add === "function") {
    toast.add({ severity: "warn", summary, detail, life: TOAST_LIFE_MS });
    return;
  }
  const box = document.createElement("div"); // frontends without the toast API
  box.className = "vista-toast";
  box.textContent = `${summary}: ${detail}`;
  Object.assign(box.style, {
    position: "fixed", right: "16px", bottom: "16px", maxWidth: "420px", padding: "10px 14px", zIndex: 10000,
    background: "#4a3b12", color: "#fff", border: "1px solid #c9a227", borderRadius: "6px", font: "13px sans-serif",
  });
  document.body.appendChild(box);
  setTimeout(() => box.remove(), TOAST_LIFE_MS);
}

app.registerExtension({
  name: "vista.nodeColors",
  setup() {
    api.addEventListener("vista.warning", (event) => showWarning(event.detail));
    setInterval(watchGraph, 500);
  },
  nodeCreated(node) {
    if (node.comfyClass && node.comfyClass.startsWith("Vista")) {
      node.color = node.color ?? VISTA_COLOR;
      node.bgcolor = node.bgcolor ?? VISTA_BGCOLOR;
    }
    if (hasPreview(node)) {
      addPreview(node);
      fitNode(node);
    }
  },
  loadedGraphNode(node) { // called once the whole graph (widget values and links) is configured
    if (hasPreview(node)) {
      fitNode(node);
      refresh(node);
    }
  },
});
