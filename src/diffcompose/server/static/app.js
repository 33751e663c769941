// diffcompose web page: paint or segment a mask, pick a task and engine, run, watch, compare, download.
// Plain JS, no build step, no external resources. It speaks the HTTP API documented in
// diffcompose/server/static/api-guide.md (change both together). The page is generated from the
// registry (/api/tasks, /api/engines): task tabs, engines, model pickers and option controls, so a new
// task, engine or option appears without editing this file. The mask lives in a canvas at the image's
// full size; the view (zoom, pan) only transforms how it is shown, and strokes are recorded in image
// pixels. Every request carries the access token from the page's own URL.
"use strict";

const $ = (id) => document.getElementById(id);
const MASK_RGB = [255, 40, 90];
const OTHER_MODEL = "__other__";
const ENGINE_DEFAULT = "__default__";

const S = {
  token: new URLSearchParams(location.search).get("token"),
  tasks: {}, engines: {}, task: null,
  image: null, imageFile: null, imageURL: null, W: 0, H: 0,
  tool: "brush", brush: 24, drawing: false, last: null,
  undo: [], redo: [],
  box: null, boxStart: null, points: [],
  view: { s: 1, tx: 0, ty: 0, fit: true }, space: false, pan: null, overStage: false, cursor: null,
  job: null, current: null, extra: {},
  entries: [], // this session's results; their blob URLs (and their "before" URLs) live as long as the page
  inUse: new Set(), // image URLs a result still shows as its "before": never revoked
  history: [], // [state, text, counted] as the status line and bar showed them, in order (for tests and the console)
};
window.diffcompose = S; // for debugging in the console

// ------------------------------------------------------------------ HTTP

function url(path, params) {
  const u = new URL(path, location.href);
  if (S.token) u.searchParams.set("token", S.token);
  for (const [k, v] of Object.entries(params || {})) u.searchParams.set(k, v);
  return u.pathname + u.search;
}

// An error the user can act on: its message and the request field or control it belongs to.
class PageError extends Error {
  constructor(message, field, status) { super(message); this.field = field || null; this.status = status; }
}

async function api(path, options) {
  const r = await fetch(url(path), options);
  if (!r.ok) {
    let msg = `${r.status} ${r.statusText}`;
    let field = null;
    try { const body = await r.json(); msg = body.error || msg; field = body.field || null; } catch (_) { /* not JSON */ }
    throw new PageError(msg, field, r.status);
  }
  return r;
}

// ------------------------------------------------------------------ status line and errors

function setStatus(state, text) {
  const el = $("status");
  el.dataset.state = state;
  el.textContent = text || state;
  const counted = $("progress").hasAttribute("value"); // false: the bar is indeterminate
  const last = S.history[S.history.length - 1];
  if (!last || last[0] !== state || last[1] !== el.textContent) S.history.push([state, el.textContent, counted]);
}

// The control an error belongs to: a request field (`field` of the API's error body, in the HTTP schema's
// names) or, without one, the control that started the action (`origin`: "run", "segment", "image").
function errorHome(field, origin) {
  if (field === "image") return { slot: "image", control: $("image-input") };
  if (field === "mask" || field === "box" || field === "points") {
    return origin === "segment" ? { slot: "segment", control: $("segment") } : { slot: "mask", control: $("tool-brush") };
  }
  if (field === "model") {
    if (origin === "segment") return { slot: "segment", control: $("segment") };
    return { control: $("model-choice").value === OTHER_MODEL ? $("model") : $("model-choice") };
  }
  const control = field && ($("opt-" + field) || $("input-" + field) || (["seed", "engine"].includes(field) && $(field)));
  if (control) return { control };
  if (field === "options") return { control: $("options-box"), unmarked: true }; // the options as a whole
  if (field === "task") return { control: $("task-tabs"), unmarked: true };
  return { slot: origin || "run", control: null };
}

function clearErrors() {
  for (const el of document.querySelectorAll(".field-error")) {
    if (el.dataset.errorFor) el.textContent = ""; else el.remove();
  }
  for (const el of document.querySelectorAll("[aria-invalid=true]")) {
    el.removeAttribute("aria-invalid");
    el.removeAttribute("aria-describedby");
  }
}

// Shown once, next to the control that caused it (and that control scrolled into view and marked).
function showError(message, field, origin) {
  clearErrors();
  if (!message) return;
  const home = errorHome(field, origin);
  let box = home.slot && document.querySelector(`[data-error-for="${home.slot}"]`);
  if (!box) {
    box = document.createElement("p");
    box.className = "field-error";
    box.setAttribute("role", "alert");
    (home.control.closest("label") || home.control).after(box);
  }
  box.id = box.id || `error-${home.slot || home.control.id}`;
  box.textContent = message;
  if (home.control && !home.unmarked) {
    home.control.setAttribute("aria-invalid", "true");
    home.control.setAttribute("aria-describedby", box.id);
  }
  box.scrollIntoView({ block: "nearest" });
}

// ------------------------------------------------------------------ start-up

async function init() {
  bindUI();
  try {
    const [health, tasks, engines] = await Promise.all([
      api("/api/health").then((r) => r.json()),
      api("/api/tasks").then((r) => r.json()),
      api("/api/engines").then((r) => r.json()),
    ]);
    $("health").textContent = `v${health.version} · device ${health.device}`;
    for (const t of tasks) S.tasks[t.name] = t;
    for (const e of engines) S.engines[e.name] = e;
    buildTaskTabs(tasks);
    buildSegmentModels();
    selectTask(S.tasks.remove ? "remove" : tasks[0].name);
    document.body.dataset.ready = "1";
  } catch (e) {
    $("health").textContent = "not connected";
    showError(e.message, null, "run");
  }
}

// ------------------------------------------------------------------ task tabs, engine, model, options

function buildTaskTabs(tasks) {
  const tabs = $("task-tabs");
  for (const t of tasks) {
    const b = document.createElement("button");
    b.setAttribute("role", "tab");
    b.id = "task-tab-" + t.name;
    b.dataset.testid = "task-tab-" + t.name;
    b.dataset.task = t.name;
    b.setAttribute("aria-controls", "task-panel");
    b.title = t.summary;
    b.textContent = t.name;
    b.addEventListener("click", () => selectTask(t.name));
    tabs.appendChild(b);
  }
  tabs.addEventListener("keydown", (ev) => { // arrow keys move between tabs, as in any tab list
    if (ev.key !== "ArrowRight" && ev.key !== "ArrowLeft") return;
    const all = [...tabs.children];
    const i = all.findIndex((b) => b.dataset.task === S.task);
    const next = all[(i + (ev.key === "ArrowRight" ? 1 : all.length - 1)) % all.length];
    selectTask(next.dataset.task);
    next.focus();
  });
}

function selectTask(name) {
  S.task = name;
  const task = S.tasks[name];
  for (const b of $("task-tabs").children) {
    const on = b.dataset.task === name;
    b.setAttribute("aria-selected", on ? "true" : "false");
    b.tabIndex = on ? 0 : -1;
  }
  $("task-panel").setAttribute("aria-labelledby", "task-tab-" + name);
  $("task-summary").textContent = task.summary;
  const sel = $("engine");
  sel.innerHTML = "";
  sel.add(new Option("auto (the server picks)", "auto"));
  let first = null;
  const missing = [];
  for (const name of task.engines) {
    const e = S.engines[name];
    const ok = engineAvailable(e);
    const opt = new Option(ok ? name : `${name} (unavailable)`, name);
    opt.disabled = !ok;
    sel.add(opt);
    if (ok && first === null) first = name;
    if (!ok) missing.push(`${name}: ${(e && e.reason) || "not installed"}`);
  }
  sel.value = first || "auto";
  sel.dataset.unavailable = missing.join("; ");
  buildExtraInputs(task);
  onEngineChange();
}

const engineAvailable = (e) => !!e && e.available !== false;

// The models an engine offers: from the server's `models` list, else (an older server) tiny and its default.
function engineModels(e) {
  if (!e) return [];
  if (Array.isArray(e.models)) return e.models;
  if (!e.default_model || e.default_model === "none") return e.default_model ? [{ id: "tiny", kind: "tiny" }] : [];
  return [{ id: "tiny", kind: "tiny" }, { id: e.default_model, kind: "default" }];
}
const takesModel = (e) => !!e && (engineModels(e).length > 0 || !!e.default_model);

function modelLabel(m) {
  if (m.kind === "tiny") return "tiny (small random weights: tries the page, not a real result)";
  if (m.kind === "default") return `${m.id} (default${m.cached === false ? ", not downloaded" : ""})`;
  if (m.kind === "cached") return `${m.id} (cached)`;
  return m.id;
}

// Fill a model <select>: the engine's models, then "other…" for free text (a hub id or a local folder).
function fillModelPicker(select, e, other) {
  select.innerHTML = "";
  if (!e) { // auto: each engine's own default
    select.add(new Option("each engine's default", ENGINE_DEFAULT));
    select.add(new Option("tiny (small random weights)", "tiny"));
  } else if (!takesModel(e)) {
    select.add(new Option("(this engine has no model)", ""));
  } else {
    for (const m of engineModels(e)) select.add(new Option(modelLabel(m), m.id));
    // The default when it is here; else a model that is here; else the default (marked not downloaded).
    const models = engineModels(e);
    const def = models.find((m) => m.kind === "default");
    const here = (def && def.cached !== false) ? def : models.find((m) => m.kind === "cached") || def;
    select.value = here ? here.id : select.options.length ? select.options[0].value : "";
  }
  if (!e || takesModel(e)) select.add(new Option("other… (type a hub id or folder)", OTHER_MODEL));
  select.disabled = !!e && !takesModel(e);
  other.hidden = select.value !== OTHER_MODEL;
}

function pickedModel(select, input) {
  const v = select.value;
  if (v === OTHER_MODEL) return input.value.trim() || null;
  if (v === ENGINE_DEFAULT || v === "") return null;
  return v;
}

// Show each engine-specific input only where the chosen engine takes it ("auto" picks one that does).
function showInputsFor(engine) {
  for (const label of $("extra-inputs").querySelectorAll("label[data-engines]")) {
    label.hidden = !!S.engines[engine] && !label.dataset.engines.split(",").includes(engine);
  }
}

function onEngineChange() {
  const name = $("engine").value;
  showInputsFor(name);
  const form = $("options");
  form.innerHTML = "";
  const e = S.engines[name];
  fillModelPicker($("model-choice"), e, $("model-other"));
  const unavailable = $("engine").dataset.unavailable;
  const about = e ? e.summary : "the server picks by priority and uses its defaults; choose an engine to set options";
  $("engine-info").textContent = about + (unavailable ? ` · unavailable here: ${unavailable}` : "");
  if (!e) return;
  for (const o of e.tasks[S.task].options) form.appendChild(optionField(o));
}

// A float option bounded within 0..1 is a slider; its value shows beside it ("default" until moved).
// Not one whose default a 0.01 step cannot hold (a learning rate of 1e-5): that is a number field.
const onSliderStep = (v) => v === null || v === undefined || Math.abs(v * 100 - Math.round(v * 100)) < 1e-9;
const isUnitSlider = (o) => o.type === "float" && o.min !== null && o.min !== undefined && o.max !== null &&
  o.max !== undefined && o.min >= 0 && o.max <= 1 && onSliderStep(o.default);

function optionField(o) {
  const label = document.createElement("label");
  label.title = o.help || "";
  let input;
  let extra = null;
  if (o.type === "choice") {
    input = document.createElement("select");
    for (const c of o.choices) input.add(new Option(String(c), String(c)));
    input.dataset.choices = JSON.stringify(o.choices); // sent back with their own JSON type (1, not "1")
    input.value = String(o.default);
  } else if (o.type === "bool") {
    input = document.createElement("input");
    input.type = "checkbox";
    input.checked = !!o.default;
  } else if (isUnitSlider(o)) {
    input = document.createElement("input");
    input.type = "range";
    input.min = o.min; input.max = o.max; input.step = "0.01";
    const shown = document.createElement("output");
    const hasDefault = o.default !== null && o.default !== undefined;
    input.value = hasDefault ? o.default : (o.min + o.max) / 2;
    input.dataset.touched = hasDefault ? "1" : "0";
    const show = () => { shown.textContent = input.dataset.touched === "1" ? Number(input.value).toFixed(2) : "default"; };
    input.addEventListener("input", () => { input.dataset.touched = "1"; show(); });
    show();
    const reset = document.createElement("button");
    reset.type = "button";
    reset.className = "reset";
    reset.textContent = "default";
    reset.setAttribute("aria-label", `${o.name}: back to the default`);
    reset.addEventListener("click", () => {
      input.value = hasDefault ? o.default : (o.min + o.max) / 2;
      input.dataset.touched = hasDefault ? "1" : "0";
      show();
    });
    extra = [shown, reset];
  } else {
    input = document.createElement("input");
    input.type = o.type === "str" ? "text" : "number";
    if (o.type === "int") input.step = "1";
    if (o.type === "float") input.step = "any";
    if (o.min !== null && o.min !== undefined) input.min = o.min;
    if (o.max !== null && o.max !== undefined) input.max = o.max;
    if (o.default === null || o.default === undefined) input.placeholder = "default";
    else input.value = o.default;
  }
  input.id = "opt-" + o.name;
  input.dataset.testid = "opt-" + o.name;
  input.dataset.name = o.name;
  input.dataset.type = o.type;
  label.append(o.name + " ");
  if (extra) label.append(extra[0], extra[1]);
  label.append(input);
  const help = document.createElement("span");
  help.className = "help";
  help.textContent = o.help || "";
  label.appendChild(help);
  return label;
}

function collectOptions() {
  const out = {};
  for (const el of $("options").querySelectorAll("[data-name]")) {
    const t = el.dataset.type;
    if (t === "bool") { out[el.dataset.name] = el.checked; continue; }
    if (el.type === "range" && el.dataset.touched !== "1") continue; // server default
    if (el.value === "") continue; // server default
    if (t === "choice") out[el.dataset.name] = JSON.parse(el.dataset.choices).find((c) => String(c) === el.value);
    else if (t === "int") out[el.dataset.name] = parseInt(el.value, 10);
    else if (t === "float") out[el.dataset.name] = parseFloat(el.value);
    else out[el.dataset.name] = el.value;
  }
  return out;
}

// Inputs besides the image and the painted mask: reference/object photos and masks, text.
function buildExtraInputs(task) {
  const box = $("extra-inputs");
  box.innerHTML = "";
  for (const inp of task.inputs) {
    if (inp.name === "image" || inp.name === "mask") continue;
    if (inp.kind === "box" || inp.kind === "points") {
      const p = document.createElement("p");
      p.className = "hint";
      p.textContent = `${inp.name}${inp.required ? " (required)" : ""}: ` +
        (inp.kind === "box" ? "draw it with the Box tool" : "click with the Clicks tool");
      box.appendChild(p);
      continue;
    }
    const label = document.createElement("label");
    label.title = inp.help;
    let el;
    if (inp.kind === "image" || inp.kind === "mask") {
      el = document.createElement("input");
      el.type = "file";
      el.accept = "image/*";
      el.addEventListener("change", () => { S.extra[inp.name] = el.files[0] || null; });
      S.extra[inp.name] = null; // the new file input is empty
    } else if (inp.name.endsWith("prompt")) {
      el = document.createElement("textarea"); el.rows = 2;
    } else {
      el = document.createElement("input"); el.type = "text";
    }
    el.id = "input-" + inp.name;
    el.dataset.testid = "input-" + inp.name;
    // An input only some engines take (a sketch, a stroke) shows for those engines and for auto only.
    if (inp.engines) label.dataset.engines = inp.engines.join(",");
    label.append(`${inp.name}${inp.required ? " (required)" : ""}` +
      (inp.engines ? ` (${inp.engines.join(", ")} only)` : ""), el);
    const help = document.createElement("span");
    help.className = "help";
    help.textContent = inp.help;
    label.appendChild(help);
    box.appendChild(label);
  }
}

// ------------------------------------------------------------------ the image

async function openImage(file) {
  clearErrors();
  const src = URL.createObjectURL(file);
  const img = new Image();
  img.src = src;
  try { await img.decode(); } catch (_) {
    URL.revokeObjectURL(src);
    showError(`cannot open ${file.name || "this file"}: not an image this browser can decode`, "image");
    return;
  }
  if (S.imageURL && !S.inUse.has(S.imageURL)) URL.revokeObjectURL(S.imageURL);
  const first = !S.W;
  Object.assign(S, { image: img, imageFile: file, imageURL: src, W: img.naturalWidth, H: img.naturalHeight,
                     undo: [], redo: [], box: null, points: [] });
  for (const c of [$("image-canvas"), $("mask-canvas")]) { c.width = S.W; c.height = S.H; }
  $("canvas-wrap").style.width = S.W + "px";
  $("canvas-wrap").style.height = S.H + "px";
  $("image-canvas").getContext("2d").drawImage(img, 0, 0);
  $("stage").classList.add("has-image");
  $("image-info").textContent = `${file.name || "image"} · ${S.W}×${S.H}`;
  if (first) setBrush(Math.max(4, Math.round(Math.min(S.W, S.H) / 40)));
  hideCompare();
  fitView();
}

// A pasted or dropped image gets a name (clipboard images often have none, or "image.png").
function namedImage(file, fallback) {
  if (file.name && file.name !== "image.png") return file;
  const ext = (file.type.split("/")[1] || "png").replace("jpeg", "jpg");
  return new File([file], `${fallback}.${ext}`, { type: file.type });
}

// ------------------------------------------------------------------ view: zoom and pan

function stageSize() { const st = $("stage"); return { w: st.clientWidth, h: st.clientHeight }; }

function applyView() {
  const v = S.view;
  const wrap = $("canvas-wrap");
  wrap.style.transform = `translate(${v.tx}px, ${v.ty}px) scale(${v.s})`;
  wrap.classList.toggle("pixelated", v.s >= 2);
  $("zoom-info").textContent = S.W ? `${Math.round(v.s * 100)}%` : "";
  resizeOverlay();
}

// The whole image in view, centred; never enlarged past 100% (press 1 for 100%, wheel for more).
function fitView() {
  if (!S.W) return;
  const { w, h } = stageSize();
  const s = Math.min(w / S.W, h / S.H, 1);
  S.view = { s, tx: (w - S.W * s) / 2, ty: (h - S.H * s) / 2, fit: true };
  applyView();
}

// Zoom by `factor` keeping the image point under the stage point (mx, my) where it is.
function zoomAt(factor, mx, my) {
  if (!S.W) return;
  const v = S.view;
  const s = Math.min(32, Math.max(0.02, v.s * factor));
  S.view = { s, tx: mx - (mx - v.tx) * s / v.s, ty: my - (my - v.ty) * s / v.s, fit: false };
  applyView();
}
function zoomCentre(factor) { const { w, h } = stageSize(); zoomAt(factor, w / 2, h / 2); }
function actualSize() { const { w, h } = stageSize(); zoomAt(1 / S.view.s, w / 2, h / 2); }

function resizeOverlay() {
  const ov = $("overlay-canvas");
  const dpr = window.devicePixelRatio || 1;
  const { w, h } = stageSize();
  const W = Math.max(1, Math.round(w * dpr)), H = Math.max(1, Math.round(h * dpr));
  if (ov.width !== W || ov.height !== H) { ov.width = W; ov.height = H; }
  drawOverlay();
}

// Pointer position in image pixels (through the view's zoom and pan).
function toImage(ev) {
  const r = $("overlay-canvas").getBoundingClientRect();
  const v = S.view;
  return { x: (ev.clientX - r.left - v.tx) / v.s, y: (ev.clientY - r.top - v.ty) / v.s };
}

// ------------------------------------------------------------------ mask editing

const maskCtx = () => $("mask-canvas").getContext("2d", { willReadFrequently: true });

function maxUndo() { return Math.max(3, Math.min(50, Math.floor(4e8 / Math.max(1, S.W * S.H * 4)))); }
function pushUndo() {
  S.undo.push(maskCtx().getImageData(0, 0, S.W, S.H));
  if (S.undo.length > maxUndo()) S.undo.shift();
  S.redo = [];
}
function undo() {
  if (!S.undo.length) return;
  S.redo.push(maskCtx().getImageData(0, 0, S.W, S.H));
  maskCtx().putImageData(S.undo.pop(), 0, 0);
}
function redo() {
  if (!S.redo.length) return;
  S.undo.push(maskCtx().getImageData(0, 0, S.W, S.H));
  maskCtx().putImageData(S.redo.pop(), 0, 0);
}

// One brush dab or segment, in image pixels: the width is the brush size whatever the zoom.
function strokeTo(p) {
  const ctx = maskCtx();
  ctx.globalCompositeOperation = S.tool === "eraser" ? "destination-out" : "source-over";
  ctx.strokeStyle = ctx.fillStyle = `rgb(${MASK_RGB.join(",")})`;
  ctx.lineWidth = S.brush;
  ctx.lineCap = ctx.lineJoin = "round";
  ctx.beginPath();
  if (!S.last) {
    ctx.arc(p.x, p.y, S.brush / 2, 0, 2 * Math.PI);
    ctx.fill();
  } else {
    ctx.moveTo(S.last.x, S.last.y);
    ctx.lineTo(p.x, p.y);
    ctx.stroke();
  }
  ctx.globalCompositeOperation = "source-over";
  S.last = p;
}

// The mask as 0/1 bytes (a painted pixel counts when at least half opaque).
function maskBits() {
  const d = maskCtx().getImageData(0, 0, S.W, S.H).data;
  const bits = new Uint8Array(S.W * S.H);
  for (let i = 0; i < bits.length; i++) bits[i] = d[4 * i + 3] >= 128 ? 1 : 0;
  return bits;
}
function setMaskBits(bits) {
  const img = new ImageData(S.W, S.H);
  const d = img.data;
  for (let i = 0; i < bits.length; i++) {
    if (!bits[i]) continue;
    d[4 * i] = MASK_RGB[0]; d[4 * i + 1] = MASK_RGB[1]; d[4 * i + 2] = MASK_RGB[2]; d[4 * i + 3] = 255;
  }
  maskCtx().putImageData(img, 0, 0);
}
const maskEmpty = (bits) => !bits.some((v) => v);

// Dilation by a (2r+1)-square, separably: distance to the nearest set pixel along rows, then columns.
function dilate(bits, w, h, r) {
  const pass = (src, n, len, stride, step) => {
    const out = new Uint8Array(src.length);
    for (let k = 0; k < n; k++) {
      const base = k * stride;
      let last = -Infinity;
      const left = new Float64Array(len);
      for (let i = 0; i < len; i++) { if (src[base + i * step]) last = i; left[i] = i - last; }
      last = Infinity;
      for (let i = len - 1; i >= 0; i--) {
        if (src[base + i * step]) last = i;
        if (Math.min(left[i], last - i) <= r) out[base + i * step] = 1;
      }
    }
    return out;
  };
  return pass(pass(bits, h, w, w, 1), w, h, 1, w);
}
function growMask(sign) {
  const r = Math.max(1, parseInt($("grow-px").value, 10) || 1);
  pushUndo();
  let bits = maskBits();
  if (sign > 0) bits = dilate(bits, S.W, S.H, r);
  else bits = dilate(bits.map((v) => 1 - v), S.W, S.H, r).map((v) => 1 - v);
  setMaskBits(bits);
}
function invertMask() { pushUndo(); setMaskBits(maskBits().map((v) => 1 - v)); }
function clearMask() { pushUndo(); maskCtx().clearRect(0, 0, S.W, S.H); }

// The mask as the API wants it: a PNG of the image's size, white = the region.
function maskBlob() {
  const bits = maskBits();
  const c = document.createElement("canvas");
  c.width = S.W; c.height = S.H;
  const img = new ImageData(S.W, S.H);
  for (let i = 0; i < bits.length; i++) {
    const v = bits[i] ? 255 : 0;
    img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = v;
    img.data[4 * i + 3] = 255;
  }
  c.getContext("2d").putImageData(img, 0, 0);
  return new Promise((resolve) => c.toBlob(resolve, "image/png"));
}
async function loadMaskFromBlob(blob) {
  const src = URL.createObjectURL(blob);
  const img = new Image();
  img.src = src;
  await img.decode();
  URL.revokeObjectURL(src);
  const c = document.createElement("canvas");
  c.width = S.W; c.height = S.H;
  const ctx = c.getContext("2d");
  ctx.drawImage(img, 0, 0, S.W, S.H);
  const d = ctx.getImageData(0, 0, S.W, S.H).data;
  const bits = new Uint8Array(S.W * S.H);
  for (let i = 0; i < bits.length; i++) bits[i] = d[4 * i] > 127 ? 1 : 0;
  pushUndo();
  setMaskBits(bits);
}

// "Download mask": made on click (building a PNG of a big mask after every stroke would lag).
async function downloadMask(ev) {
  ev.preventDefault();
  if (!S.W) { showError("open an image first", "image"); return; }
  const a = document.createElement("a");
  a.href = URL.createObjectURL(await maskBlob());
  a.download = (S.imageFile.name || "image").replace(/\.[^.]*$/, "") + "-mask.png";
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}

// ------------------------------------------------------------------ overlay: box, clicks, brush cursor

// Drawn in screen space over the stage (sharp at any zoom); image points go through the view.
function drawOverlay() {
  const ov = $("overlay-canvas");
  const ctx = ov.getContext("2d");
  ctx.clearRect(0, 0, ov.width, ov.height);
  if (!S.W) return;
  const dpr = ov.width / Math.max(1, stageSize().w);
  const v = S.view;
  const sx = (x) => (x * v.s + v.tx) * dpr, sy = (y) => (y * v.s + v.ty) * dpr, k = v.s * dpr;
  if (S.box) {
    const [x0, y0, x1, y1] = S.box;
    ctx.lineWidth = 2;
    ctx.setLineDash([6, 4]);
    ctx.strokeStyle = "#fff";
    ctx.strokeRect(sx(x0), sy(y0), (x1 - x0) * k, (y1 - y0) * k);
    ctx.setLineDash([]);
    ctx.strokeStyle = "#2a62c9";
    ctx.strokeRect(sx(x0) - 1, sy(y0) - 1, (x1 - x0) * k + 2, (y1 - y0) * k + 2);
  }
  for (const [x, y, label] of S.points) {
    ctx.beginPath();
    ctx.arc(sx(x), sy(y), 6 * dpr, 0, 2 * Math.PI);
    ctx.fillStyle = label ? "#2e7d32" : "#b3261e";
    ctx.fill();
    ctx.lineWidth = 2;
    ctx.strokeStyle = "#fff";
    ctx.stroke();
  }
  const c = S.cursor;
  if (c && !S.space && !S.pan && (S.tool === "brush" || S.tool === "eraser")) {
    // the brush's true size: its diameter in image pixels, through the zoom
    const r = Math.max(0.5, S.brush / 2 * k);
    for (const [color, width] of [["#fff", 3], ["#000", 1]]) {
      ctx.beginPath();
      ctx.arc(sx(c.x), sy(c.y), r, 0, 2 * Math.PI);
      ctx.lineWidth = width;
      ctx.strokeStyle = color;
      ctx.stroke();
    }
  }
}

function clampInt(v, lo, hi) { return Math.min(hi, Math.max(lo, Math.round(v))); }

function onPointerDown(ev) {
  if (!S.W) return;
  const ov = $("overlay-canvas");
  if (S.space || ev.button === 1) { // pan
    ev.preventDefault();
    ov.setPointerCapture(ev.pointerId);
    S.pan = { x: ev.clientX, y: ev.clientY, tx: S.view.tx, ty: S.view.ty };
    ov.classList.add("panning");
    return;
  }
  const p = toImage(ev);
  if (S.tool === "brush" || S.tool === "eraser") {
    if (ev.button !== 0) return;
    ov.setPointerCapture(ev.pointerId);
    pushUndo();
    S.drawing = true;
    S.last = null;
    strokeTo(p);
  } else if (S.tool === "box") {
    ov.setPointerCapture(ev.pointerId);
    S.boxStart = p;
  } else if (S.tool === "points") {
    const label = ev.button === 2 || ev.shiftKey ? 0 : 1;
    S.points.push([clampInt(p.x, 0, S.W - 1), clampInt(p.y, 0, S.H - 1), label]);
    drawOverlay();
  }
}
function onPointerMove(ev) {
  if (!S.W) return;
  if (S.pan) {
    S.view = { ...S.view, tx: S.pan.tx + ev.clientX - S.pan.x, ty: S.pan.ty + ev.clientY - S.pan.y, fit: false };
    applyView();
    return;
  }
  const p = toImage(ev);
  S.cursor = p;
  if (S.drawing) strokeTo(p);
  if (S.boxStart) {
    const a = S.boxStart;
    S.box = [clampInt(Math.min(a.x, p.x), 0, S.W - 1), clampInt(Math.min(a.y, p.y), 0, S.H - 1),
             clampInt(Math.max(a.x, p.x), 1, S.W), clampInt(Math.max(a.y, p.y), 1, S.H)];
  }
  drawOverlay();
}
function onPointerUp() {
  if (S.pan) { S.pan = null; $("overlay-canvas").classList.remove("panning"); }
  if (S.drawing) { S.drawing = false; S.last = null; }
  if (S.boxStart) {
    S.boxStart = null;
    if (S.box && (S.box[2] - S.box[0] < 2 || S.box[3] - S.box[1] < 2)) S.box = null;
    drawOverlay();
  }
}

function setTool(tool) {
  S.tool = tool;
  for (const b of document.querySelectorAll(".tool")) {
    b.classList.toggle("active", b.dataset.tool === tool);
    b.setAttribute("aria-pressed", b.dataset.tool === tool ? "true" : "false");
  }
  updateCursorClass();
  drawOverlay();
}
function updateCursorClass() {
  const ov = $("overlay-canvas");
  ov.classList.toggle("pan", S.space);
  ov.classList.toggle("brush", !S.space && (S.tool === "brush" || S.tool === "eraser"));
}
function setBrush(size) {
  S.brush = Math.max(1, Math.min(500, Math.round(size)));
  $("brush-size").value = S.brush;
  $("brush-size-value").textContent = S.brush;
  drawOverlay();
}

// ------------------------------------------------------------------ requests

function taskInputs(task) { return Object.fromEntries(S.tasks[task].inputs.map((i) => [i.name, i])); }

// The multipart body of /api/jobs and /api/run (see api-guide.md, "The request").
async function buildForm(task, engine, extraRequest) {
  if (!S.imageFile) throw new PageError("open an image first", "image");
  const inputs = taskInputs(task);
  const fd = new FormData();
  fd.append("image", S.imageFile, S.imageFile.name || "image.png");
  const req = { task, engine, seed: parseInt($("seed").value, 10) || 0, options: {} };
  let sentMask = null;
  if (inputs.mask) {
    const bits = maskBits();
    if (!maskEmpty(bits)) { sentMask = await maskBlob(); fd.append("mask", sentMask, "mask.png"); }
    else if (inputs.mask.required) throw new PageError(`${task} needs a mask: paint the region to change`, "mask");
  }
  if (inputs.box && S.box && (!sentMask || inputs.box.required)) req.box = S.box;
  if (inputs.points && S.points.length) req.points = S.points;
  for (const [name, inp] of Object.entries(inputs)) {
    if (name === "image" || name === "mask") continue;
    const field = $("input-" + name);
    if (field && field.closest("label").hidden) continue; // not taken by the chosen engine
    if ((inp.kind === "image" || inp.kind === "mask") && S.extra[name]) fd.append(name, S.extra[name], S.extra[name].name);
    if (inp.kind === "text") {
      const el = $("input-" + name);
      if (el && el.value.trim()) req[name] = el.value;
    }
  }
  Object.assign(req, extraRequest || {});
  fd.append("request", JSON.stringify(req));
  S.lastSent = { request: req, mask: sentMask }; // what went out last (for checking in the console or tests)
  return { fd, req };
}

const jobActive = () => !!S.job && !S.job.ended;

async function run() {
  if (jobActive()) return; // one job at a time from this page (Ctrl+Enter while one runs does nothing)
  clearErrors();
  const task = S.task;
  const engine = $("engine").value;
  let form;
  try {
    form = await buildForm(task, engine, {
      options: S.engines[engine] ? collectOptions() : {},
      model: pickedModel($("model-choice"), $("model")),
    });
  } catch (e) { showError(e.message, e.field, "run"); return; }
  $("run").disabled = true;
  $("cancel").disabled = false;
  $("preview-area").hidden = true;
  S.inUse.add(S.imageURL); // this image is the job's "before" from now on
  S.job = { id: null, task, engine, seed: form.req.seed, before: S.imageURL, name: S.imageFile.name, ended: false };
  showState({ status: "queued" });
  try {
    const job = await (await api("/api/jobs", { method: "POST", body: form.fd })).json();
    S.job.id = job.id;
    listen(S.job);
  } catch (e) {
    finish("error", e.message, e.field);
  }
}

// The status line and bar for one job state (see the design's job states): honest about what is happening.
function showState(d) {
  const bar = $("progress");
  const indeterminate = () => bar.removeAttribute("value");
  const job = S.job;
  if (!job || job.ended) return;
  job.status = d.status;
  if (d.status === "queued") {
    indeterminate();
    setStatus("queued", d.position ? `queued: number ${d.position} in line` : "queued…");
  } else if (d.status === "loading") {
    indeterminate();
    setStatus("loading", d.model ? `loading the model ${d.model}…` : "loading the engine…");
  } else if (d.status === "running") {
    const elapsed = typeof d.elapsed === "number" ? ` · ${d.elapsed.toFixed(1)} s` : "";
    if (d.total) {
      bar.max = d.total;
      bar.value = d.step || 0;
      setStatus("running", `running: step ${d.step || 0} of ${d.total}${elapsed}`);
    } else { // a one-pass engine: no steps to count
      indeterminate();
      setStatus("running", `running…${elapsed}`);
    }
  } else if (d.status === "finishing") {
    if (bar.hasAttribute("value") && bar.max > 0) bar.value = bar.max; else indeterminate();
    setStatus("finishing", "finishing…");
  }
}

function listen(job) {
  const es = new EventSource(url(`/api/jobs/${job.id}/events`));
  job.stream = es;
  const end = () => { job.ended = true; es.close(); };
  es.addEventListener("state", (ev) => {
    const d = JSON.parse(ev.data);
    if (d.status === "running" && job.status === "running" && !d.total && job.total) return; // keep counted steps
    if (["queued", "loading", "running", "finishing"].includes(d.status)) showState(d);
  });
  es.addEventListener("progress", (ev) => { // a server without `state` events: progress means running
    const d = JSON.parse(ev.data);
    if (job.status === "finishing") return;
    job.total = d.total;
    showState({ status: "running", step: d.step, total: d.total, elapsed: d.elapsed });
  });
  es.addEventListener("preview", (ev) => {
    const d = JSON.parse(ev.data);
    $("preview-area").hidden = false;
    $("preview").src = url(d.url, { step: d.step });
    $("preview-step").textContent = `(step ${d.step})`;
  });
  es.addEventListener("done", async (ev) => {
    end();
    const d = JSON.parse(ev.data);
    const bar = $("progress");
    if (!bar.hasAttribute("value") || bar.max <= 0) bar.max = 1;
    bar.value = bar.max;
    try {
      for (let i = 0; i < d.results; i++) await fetchResult(job, i);
      finish("done", `done: ${d.results} result${d.results === 1 ? "" : "s"}`);
    } catch (e) { finish("error", e.message, e.field); }
  });
  es.addEventListener("cancelled", () => { end(); finish("cancelled", "cancelled"); });
  es.addEventListener("error", (ev) => {
    if (ev.data) { // the job's error event (not a connection problem)
      end();
      const d = JSON.parse(ev.data);
      finish("error", d.error, d.field);
    } else if (!job.ended && es.readyState === EventSource.CLOSED) {
      end();
      finish("error", "lost the connection to the server");
    } // otherwise the browser reconnects and the server replays the current state
  });
}

// The end of a job: the status line says what happened ("failed"), the message itself sits by its control.
function finish(state, message, field) {
  if (S.job) S.job.ended = true;
  const bar = $("progress");
  if (state !== "done") { bar.max = 1; bar.value = 0; }
  setStatus(state, state === "error" ? "failed" : message);
  if (state === "error") showError(message, field, "run");
  $("run").disabled = false;
  $("cancel").disabled = true;
  $("preview-area").hidden = true;
}

async function cancel() {
  if (!jobActive() || !S.job.id) return;
  $("cancel").disabled = true;
  setStatus("cancelling", "cancelling…");
  try { await api(`/api/jobs/${S.job.id}/cancel`, { method: "POST" }); } catch (e) { showError(e.message, e.field, "run"); }
}

async function fetchResult(job, index) {
  const res = await fetch(url(`/api/jobs/${job.id}/result`, { index }));
  if (!res.ok) throw new Error((await res.json().catch(() => ({}))).error || `result ${index}: ${res.status}`);
  const blob = await res.blob();
  const entry = {
    task: job.task, name: job.name, before: job.before, index, blob, url: URL.createObjectURL(blob),
    engine: res.headers.get("X-Diffcompose-Engine") || job.engine,
    seed: res.headers.get("X-Diffcompose-Seed") || job.seed,
  };
  S.entries.push(entry);
  addThumb(entry);
  if (job.task === S.maskTask && job.before === S.imageURL) { await loadMaskFromBlob(blob); return; }
  showResult(entry);
}

function resultName(e) {
  const base = (e.name || "image").replace(/\.[^.]*$/, "");
  return `${base}-${e.task}-${e.engine}-seed${e.seed}${e.index ? "-" + e.index : ""}.png`;
}

// ------------------------------------------------------------------ result: before/after over the canvas

function showResult(e) {
  S.current = e;
  $("compare-before").src = e.before;
  $("compare-after").src = e.url;
  $("compare").hidden = false;
  $("result-bar").hidden = false;
  $("download").href = e.url;
  $("download").download = resultName(e);
  setSplit(+$("compare-slider").value);
  for (const f of document.querySelectorAll("#results-strip figure")) f.classList.toggle("current", f.entry === e);
  layoutCompare();
}

function hideCompare() {
  $("compare").hidden = true;
  $("result-bar").hidden = true;
  for (const f of document.querySelectorAll("#results-strip figure")) f.classList.remove("current");
}

// The compare frame gets the result's fitted size, so the split line runs over the image only.
function layoutCompare() {
  if ($("compare").hidden) return;
  const img = $("compare-after");
  const place = () => {
    const w = img.naturalWidth, h = img.naturalHeight;
    if (!w) return;
    const st = stageSize();
    const s = Math.min(st.w / w, st.h / h, 1);
    $("compare-frame").style.width = `${Math.floor(w * s)}px`;
    $("compare-frame").style.height = `${Math.floor(h * s)}px`;
  };
  if (img.complete && img.naturalWidth) place(); else img.addEventListener("load", place, { once: true });
}

function setSplit(pct) {
  $("compare-slider").value = pct;
  $("compare-after-clip").style.clipPath = `inset(0 0 0 ${pct}%)`;
  $("compare-line").style.left = `${pct}%`;
}

function addThumb(e) {
  const fig = document.createElement("figure");
  fig.entry = e;
  fig.setAttribute("role", "listitem");
  fig.dataset.testid = "result-thumb";
  const b = document.createElement("button");
  b.title = "show before/after";
  const img = document.createElement("img");
  img.src = e.url;
  img.alt = resultName(e);
  b.appendChild(img);
  const cap = document.createElement("figcaption");
  cap.textContent = `${e.task} · ${e.engine} · seed ${e.seed}`;
  fig.append(b, cap);
  b.addEventListener("click", () => showResult(e));
  $("results-strip").appendChild(fig);
  fig.scrollIntoView({ block: "nearest", inline: "nearest" });
}

// ------------------------------------------------------------------ mask from box/clicks

// The task that predicts an object mask, from the registry: the one whose output is a mask (older servers
// do not say: then the one that takes clicks and no mask).
function findMaskTask() {
  const all = Object.values(S.tasks);
  const t = all.find((x) => x.output === "mask") ||
    all.find((x) => x.inputs.some((i) => i.kind === "points") && !x.inputs.some((i) => i.kind === "mask"));
  return t ? t.name : null;
}

// One model picker per mask engine that takes a model (e.g. SAM), under the "Mask from box/clicks" button.
function buildSegmentModels() {
  S.maskTask = findMaskTask();
  const box = $("segment-models");
  box.innerHTML = "";
  if (!S.maskTask) { $("segment").disabled = true; return; }
  for (const name of S.tasks[S.maskTask].engines) {
    const e = S.engines[name];
    if (!engineAvailable(e) || !takesModel(e)) continue;
    const label = document.createElement("label");
    const select = document.createElement("select");
    select.id = `segment-model-${name}`;
    select.dataset.testid = select.id;
    label.append(`${name} model (for clicks)`, select);
    const otherLabel = document.createElement("label");
    const input = document.createElement("input");
    input.type = "text";
    input.id = `segment-model-${name}-other`;
    otherLabel.append(`${name} model (hub id or folder)`, input);
    fillModelPicker(select, e, otherLabel);
    select.addEventListener("change", () => { otherLabel.hidden = select.value !== OTHER_MODEL; });
    box.append(label, otherLabel);
  }
}

// Which mask engines to try, best first: with clicks, engines with a model (they take clicks); with a box
// alone, engines without one first (no weights to load). A failure of one tries the next.
function maskEngines(clicks) {
  const names = S.tasks[S.maskTask].engines.filter((n) => engineAvailable(S.engines[n]));
  const withModel = names.filter((n) => takesModel(S.engines[n]));
  const without = names.filter((n) => !takesModel(S.engines[n]));
  return clicks ? [...withModel, ...without] : [...without, ...withModel];
}

async function segmentMask() {
  clearErrors();
  const info = $("segment-info");
  if (!S.W) { showError("open an image first", "image"); return; }
  if (!S.box && !S.points.length) {
    showError("draw a box around the object (Box tool) or click on it (Clicks tool)", null, "segment");
    return;
  }
  const order = maskEngines(S.points.length > 0);
  const once = async (name) => {
    const sel = $(`segment-model-${name}`);
    const extra = { options: {}, model: sel ? pickedModel(sel, $(`segment-model-${name}-other`)) : null };
    const { fd } = await buildForm(S.maskTask, name, extra);
    return (await api("/api/run", { method: "POST", body: fd })).blob();
  };
  $("segment").disabled = true;
  const skipped = [];
  try {
    for (let i = 0; i < order.length; i++) {
      const name = order[i];
      info.textContent = `${skipped.join("; ")}${skipped.length ? "; " : ""}making the mask with ${name}…`;
      try {
        await loadMaskFromBlob(await once(name));
        info.textContent = skipped.length ? `${skipped.join("; ")}; mask from ${name}` : `mask from ${name}`;
        return;
      } catch (e) {
        const retry = i + 1 < order.length && (e.status === 503 || e.status === 400);
        if (!retry) throw e;
        skipped.push(`${name} unavailable (${e.message})`);
      }
    }
  } catch (e) {
    info.textContent = skipped.join("; ");
    showError(e.message, e.field, "segment");
  } finally {
    $("segment").disabled = false;
  }
}

// ------------------------------------------------------------------ wiring

function isTyping(el) {
  const tag = (el.tagName || "").toLowerCase();
  return tag === "textarea" || tag === "select" || (tag === "input" && !["range", "checkbox", "file", "button"].includes(el.type));
}

function bindUI() {
  $("image-input").addEventListener("change", (ev) => {
    const f = ev.target.files[0];
    ev.target.value = ""; // so that opening the same file again fires "change" again
    if (f) openImage(f);
  });
  $("drop-open").addEventListener("click", () => $("image-input").click());
  const stage = $("stage");
  stage.addEventListener("dragover", (ev) => { ev.preventDefault(); stage.classList.add("dragover"); });
  stage.addEventListener("dragleave", () => stage.classList.remove("dragover"));
  stage.addEventListener("drop", (ev) => {
    ev.preventDefault();
    stage.classList.remove("dragover");
    const f = [...ev.dataTransfer.files].find((x) => x.type.startsWith("image/")) || ev.dataTransfer.files[0];
    if (f) openImage(f);
  });
  document.addEventListener("paste", (ev) => {
    const items = ev.clipboardData ? [...ev.clipboardData.items] : [];
    const item = items.find((i) => i.kind === "file" && i.type.startsWith("image/"));
    if (!item) return; // text pastes into fields as usual
    ev.preventDefault();
    openImage(namedImage(item.getAsFile(), "pasted"));
  });
  stage.addEventListener("pointerenter", () => { S.overStage = true; });
  stage.addEventListener("pointerleave", () => { S.overStage = false; });
  const ov = $("overlay-canvas");
  ov.addEventListener("pointerdown", onPointerDown);
  ov.addEventListener("pointermove", onPointerMove);
  ov.addEventListener("pointerup", onPointerUp);
  ov.addEventListener("pointercancel", onPointerUp);
  ov.addEventListener("pointerleave", () => { S.cursor = null; drawOverlay(); });
  ov.addEventListener("contextmenu", (ev) => ev.preventDefault());
  ov.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const r = ov.getBoundingClientRect();
    const dy = ev.deltaMode === 1 ? ev.deltaY * 40 : ev.deltaY;
    zoomAt(Math.exp(-dy * 0.002), ev.clientX - r.left, ev.clientY - r.top);
    S.cursor = toImage(ev);
    drawOverlay();
  }, { passive: false });
  new ResizeObserver(() => {
    if (!S.W) return;
    if (S.view.fit) fitView(); else applyView();
    layoutCompare();
  }).observe(stage);

  for (const b of document.querySelectorAll(".tool")) {
    b.addEventListener("click", () => { setTool(b.dataset.tool); hideCompare(); }); // picking a tool: back to the mask
  }
  $("brush-size").addEventListener("input", (ev) => setBrush(+ev.target.value));
  $("undo").addEventListener("click", undo);
  $("redo").addEventListener("click", redo);
  $("mask-clear").addEventListener("click", () => S.W && clearMask());
  $("mask-invert").addEventListener("click", () => S.W && invertMask());
  $("mask-grow").addEventListener("click", () => S.W && growMask(1));
  $("mask-shrink").addEventListener("click", () => S.W && growMask(-1));
  $("segment").addEventListener("click", segmentMask);
  $("download-mask").addEventListener("click", downloadMask);
  $("prompts-clear").addEventListener("click", () => { S.box = null; S.points = []; drawOverlay(); });
  $("engine").addEventListener("change", onEngineChange);
  $("model-choice").addEventListener("change", () => { $("model-other").hidden = $("model-choice").value !== OTHER_MODEL; });
  $("run").addEventListener("click", run);
  $("cancel").addEventListener("click", cancel);
  $("compare-slider").addEventListener("input", (ev) => setSplit(+ev.target.value));
  const frame = $("compare-frame");
  const splitAt = (ev) => {
    const r = frame.getBoundingClientRect();
    setSplit(Math.round(Math.min(100, Math.max(0, (ev.clientX - r.left) / r.width * 100))));
  };
  frame.addEventListener("pointerdown", (ev) => { frame.setPointerCapture(ev.pointerId); splitAt(ev); });
  frame.addEventListener("pointermove", (ev) => { if (frame.hasPointerCapture(ev.pointerId)) splitAt(ev); });
  $("use-result").addEventListener("click", () => {
    if (S.current) openImage(new File([S.current.blob], resultName(S.current), { type: "image/png" }));
  });
  $("back-to-mask").addEventListener("click", hideCompare);
  $("help-open").addEventListener("click", () => $("help").showModal());

  document.addEventListener("keydown", onKeyDown);
  document.addEventListener("keyup", (ev) => {
    if (ev.key === " " && S.space) { S.space = false; updateCursorClass(); drawOverlay(); }
  });
  window.addEventListener("blur", () => { S.space = false; updateCursorClass(); });
}

function onKeyDown(ev) {
  const mod = ev.ctrlKey || ev.metaKey;
  if (mod && ev.key === "Enter") { ev.preventDefault(); run(); return; }
  if ($("help").open) return; // the dialog closes itself on Esc
  if (ev.key === "Escape") {
    if (jobActive()) { ev.preventDefault(); cancel(); } else if (!$("compare").hidden) hideCompare();
    return;
  }
  if (isTyping(ev.target)) return;
  if (ev.key === " " && (S.overStage || ev.target === document.body)) { // space held: drag pans
    ev.preventDefault();
    if (!S.space) { S.space = true; updateCursorClass(); drawOverlay(); }
    return;
  }
  if (mod && ev.key.toLowerCase() === "z") { ev.preventDefault(); if (ev.shiftKey) redo(); else undo(); }
  else if (mod && ev.key.toLowerCase() === "y") { ev.preventDefault(); redo(); }
  else if (mod) return;
  else if (ev.key === "?") { ev.preventDefault(); $("help").showModal(); }
  else if (ev.key === "[") setBrush(S.brush / 1.15 - 1);
  else if (ev.key === "]") setBrush(S.brush * 1.15 + 1);
  else if (ev.key === "0") fitView();
  else if (ev.key === "1") actualSize();
  else if (ev.key === "+" || ev.key === "=") zoomCentre(1.25);
  else if (ev.key === "-") zoomCentre(1 / 1.25);
  else if (ev.key === "b") setTool("brush");
  else if (ev.key === "e") setTool("eraser");
  else if (ev.key === "x") setTool("box");
  else if (ev.key === "p") setTool("points");
}

init();
