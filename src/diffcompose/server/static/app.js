// diffcompose web page: paint or segment a mask, pick a task and engine, run, watch, compare, download.
// Plain JS, no build step, no external resources. It speaks the HTTP API documented in
// diffcompose/server/static/api-guide.md (change both together). The mask lives in a canvas at the image's
// full size; the view scales. Every request carries the access token from the page's own URL.
"use strict";

const $ = (id) => document.getElementById(id);
const MASK_RGB = [255, 40, 90];

const S = {
  token: new URLSearchParams(location.search).get("token"),
  tasks: {}, engines: {},
  image: null, imageFile: null, imageURL: null, W: 0, H: 0,
  tool: "brush", brush: 24, drawing: false, last: null,
  undo: [], redo: [],
  box: null, boxStart: null, points: [],
  job: null, current: null, extra: {},
};
window.diffcompose = S; // for debugging in the console

// ------------------------------------------------------------------ HTTP

function url(path, params) {
  const u = new URL(path, location.href);
  if (S.token) u.searchParams.set("token", S.token);
  for (const [k, v] of Object.entries(params || {})) u.searchParams.set(k, v);
  return u.pathname + u.search;
}

async function api(path, options) {
  const r = await fetch(url(path), options);
  if (!r.ok) {
    let msg = `${r.status} ${r.statusText}`;
    try { msg = (await r.json()).error || msg; } catch (_) { /* not JSON */ }
    const err = new Error(msg);
    err.status = r.status;
    throw err;
  }
  return r;
}

// ------------------------------------------------------------------ status line

function setStatus(state, text) {
  const el = $("status");
  el.dataset.state = state;
  el.textContent = text || state;
}
function showError(msg) { $("error").textContent = msg || ""; }

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
    $("sam-model-label").hidden = !engines.some((e) => e.name === "sam" && e.available);
    for (const t of tasks) S.tasks[t.name] = t;
    for (const e of engines) S.engines[e.name] = e;
    const sel = $("task");
    for (const t of tasks) sel.add(new Option(t.name, t.name));
    sel.value = S.tasks.remove ? "remove" : tasks[0].name;
    onTaskChange();
    document.body.dataset.ready = "1";
  } catch (e) {
    $("health").textContent = "not connected";
    showError(e.message);
  }
}

// ------------------------------------------------------------------ task, engine, options

function onTaskChange() {
  const task = S.tasks[$("task").value];
  $("task-summary").textContent = task.summary;
  const sel = $("engine");
  sel.innerHTML = "";
  sel.add(new Option("auto (the server picks)", "auto"));
  let first = null;
  for (const name of task.engines) {
    const e = S.engines[name];
    const opt = new Option(e.available ? name : `${name} (unavailable)`, name);
    opt.disabled = !e.available;
    sel.add(opt);
    if (e.available && first === null) first = name;
  }
  sel.value = first || "auto";
  buildExtraInputs(task);
  onEngineChange();
}

function onEngineChange() {
  const name = $("engine").value;
  const task = $("task").value;
  const form = $("options");
  form.innerHTML = "";
  const e = S.engines[name];
  $("model").placeholder = e && e.default_model ? e.default_model : "(no model)";
  $("model").disabled = !!e && !e.default_model;
  if (!e) {
    $("engine-info").textContent = "auto: the server picks by priority and uses its defaults; choose an engine to set options";
    return;
  }
  $("engine-info").textContent = e.summary + (e.reason ? ` — ${e.reason}` : "");
  for (const o of e.tasks[task].options) form.appendChild(optionField(o));
}

function optionField(o) {
  const label = document.createElement("label");
  label.title = o.help || "";
  let input;
  if (o.type === "choice") {
    input = document.createElement("select");
    for (const c of o.choices) input.add(new Option(String(c), String(c)));
    input.value = String(o.default);
  } else if (o.type === "bool") {
    input = document.createElement("input");
    input.type = "checkbox";
    input.checked = !!o.default;
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
  label.append(o.name + " ", input);
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
    if (el.value === "") continue; // server default
    if (t === "int") out[el.dataset.name] = parseInt(el.value, 10);
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
    const label = document.createElement("label");
    label.title = inp.help;
    let el;
    if (inp.kind === "image" || inp.kind === "mask") {
      el = document.createElement("input");
      el.type = "file";
      el.accept = "image/*";
      el.addEventListener("change", () => { S.extra[inp.name] = el.files[0] || null; });
      S.extra[inp.name] = null; // the new file input is empty
    } else if (inp.kind === "text") {
      if (inp.name.endsWith("prompt")) { el = document.createElement("textarea"); el.rows = 2; }
      else { el = document.createElement("input"); el.type = "text"; }
    } else if (inp.kind === "box") {
      el = document.createElement("span");
      el.className = "hint";
      el.textContent = " — draw it with the Box tool";
    } else if (inp.kind === "points") {
      el = document.createElement("span");
      el.className = "hint";
      el.textContent = " — click with the Clicks tool";
    }
    el.id = "input-" + inp.name;
    el.dataset.testid = "input-" + inp.name;
    label.append(`${inp.name}${inp.required ? " *" : ""}`, el);
    if (inp.kind !== "box" && inp.kind !== "points") {
      const help = document.createElement("span");
      help.className = "help hint";
      help.textContent = inp.help;
      label.appendChild(help);
    }
    box.appendChild(label);
  }
}

// ------------------------------------------------------------------ the image

async function openImage(file) {
  showError("");
  const src = URL.createObjectURL(file);
  const img = new Image();
  img.src = src;
  try { await img.decode(); } catch (_) {
    URL.revokeObjectURL(src);
    showError(`cannot open ${file.name}: not an image this browser can decode`);
    return;
  }
  if (S.imageURL) URL.revokeObjectURL(S.imageURL);
  Object.assign(S, { image: img, imageFile: file, imageURL: src, W: img.naturalWidth, H: img.naturalHeight,
                     undo: [], redo: [], box: null, points: [] });
  for (const c of [$("image-canvas"), $("mask-canvas")]) { c.width = S.W; c.height = S.H; }
  $("image-canvas").getContext("2d").drawImage(img, 0, 0);
  $("stage").classList.add("has-image");
  $("image-info").textContent = `${file.name || "image"} · ${S.W}×${S.H}`;
  resizeOverlay();
}

function resizeOverlay() {
  const ov = $("overlay-canvas");
  const r = ov.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  ov.width = Math.max(1, Math.round(r.width * dpr));
  ov.height = Math.max(1, Math.round(r.height * dpr));
  drawOverlay();
}

// Pointer position in image pixels.
function toImage(ev) {
  const r = $("overlay-canvas").getBoundingClientRect();
  return { x: (ev.clientX - r.left) * S.W / r.width, y: (ev.clientY - r.top) * S.H / r.height };
}
function imagePxPerScreenPx() { return S.W / $("overlay-canvas").getBoundingClientRect().width; }

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

function strokeTo(p) {
  const ctx = maskCtx();
  ctx.globalCompositeOperation = S.tool === "eraser" ? "destination-out" : "source-over";
  ctx.strokeStyle = ctx.fillStyle = `rgb(${MASK_RGB.join(",")})`;
  ctx.lineWidth = S.brush * imagePxPerScreenPx();
  ctx.lineCap = ctx.lineJoin = "round";
  ctx.beginPath();
  if (!S.last) {
    ctx.arc(p.x, p.y, ctx.lineWidth / 2, 0, 2 * Math.PI);
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
  if (!S.W) return;
  const a = document.createElement("a");
  a.href = URL.createObjectURL(await maskBlob());
  a.download = (S.imageFile.name || "image").replace(/\.[^.]*$/, "") + "-mask.png";
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}

// ------------------------------------------------------------------ box, clicks, overlay

function drawOverlay(cursor) {
  const ov = $("overlay-canvas");
  const ctx = ov.getContext("2d");
  ctx.clearRect(0, 0, ov.width, ov.height);
  if (!S.W) return;
  const k = ov.width / S.W;
  if (S.box) {
    const [x0, y0, x1, y1] = S.box;
    ctx.lineWidth = 2;
    ctx.setLineDash([6, 4]);
    ctx.strokeStyle = "#fff";
    ctx.strokeRect(x0 * k, y0 * k, (x1 - x0) * k, (y1 - y0) * k);
    ctx.setLineDash([]);
    ctx.strokeStyle = "#2f6fde";
    ctx.strokeRect(x0 * k - 1, y0 * k - 1, (x1 - x0) * k + 2, (y1 - y0) * k + 2);
  }
  for (const [x, y, label] of S.points) {
    ctx.beginPath();
    ctx.arc(x * k, y * k, 6, 0, 2 * Math.PI);
    ctx.fillStyle = label ? "#2e7d32" : "#c62828";
    ctx.fill();
    ctx.lineWidth = 2;
    ctx.strokeStyle = "#fff";
    ctx.stroke();
  }
  if (cursor && (S.tool === "brush" || S.tool === "eraser")) {
    const dpr = window.devicePixelRatio || 1;
    ctx.beginPath();
    ctx.arc(cursor.x * k, cursor.y * k, S.brush * dpr / 2, 0, 2 * Math.PI);
    ctx.lineWidth = 1;
    ctx.strokeStyle = "#000";
    ctx.stroke();
  }
}

function clampInt(v, lo, hi) { return Math.min(hi, Math.max(lo, Math.round(v))); }

function onPointerDown(ev) {
  if (!S.W) return;
  const p = toImage(ev);
  if (S.tool === "brush" || S.tool === "eraser") {
    if (ev.button !== 0) return;
    ev.target.setPointerCapture(ev.pointerId);
    pushUndo();
    S.drawing = true;
    S.last = null;
    strokeTo(p);
  } else if (S.tool === "box") {
    ev.target.setPointerCapture(ev.pointerId);
    S.boxStart = p;
  } else if (S.tool === "points") {
    const label = ev.button === 2 || ev.shiftKey ? 0 : 1;
    S.points.push([clampInt(p.x, 0, S.W - 1), clampInt(p.y, 0, S.H - 1), label]);
    drawOverlay();
  }
}
function onPointerMove(ev) {
  if (!S.W) return;
  const p = toImage(ev);
  if (S.drawing) strokeTo(p);
  if (S.boxStart) {
    const a = S.boxStart;
    S.box = [clampInt(Math.min(a.x, p.x), 0, S.W - 1), clampInt(Math.min(a.y, p.y), 0, S.H - 1),
             clampInt(Math.max(a.x, p.x), 1, S.W), clampInt(Math.max(a.y, p.y), 1, S.H)];
  }
  drawOverlay(p);
}
function onPointerUp() {
  if (S.drawing) { S.drawing = false; S.last = null; }
  if (S.boxStart) {
    S.boxStart = null;
    if (S.box && (S.box[2] - S.box[0] < 2 || S.box[3] - S.box[1] < 2)) S.box = null;
    drawOverlay();
  }
}

function setTool(tool) {
  S.tool = tool;
  for (const b of document.querySelectorAll(".tool")) b.classList.toggle("active", b.dataset.tool === tool);
  drawOverlay();
}
function setBrush(size) {
  S.brush = Math.max(1, Math.min(200, Math.round(size)));
  $("brush-size").value = S.brush;
  $("brush-size-value").textContent = S.brush;
}

// ------------------------------------------------------------------ requests

function taskInputs(task) { return Object.fromEntries(S.tasks[task].inputs.map((i) => [i.name, i])); }

// The multipart body of /api/jobs and /api/run (see api-guide.md, "The request").
async function buildForm(task, engine, extraRequest) {
  if (!S.imageFile) throw new Error("open an image first");
  const inputs = taskInputs(task);
  const fd = new FormData();
  fd.append("image", S.imageFile, S.imageFile.name || "image.png");
  const req = { task, engine, seed: parseInt($("seed").value, 10) || 0, options: {} };
  let sentMask = null;
  if (inputs.mask) {
    const bits = maskBits();
    if (!maskEmpty(bits)) { sentMask = await maskBlob(); fd.append("mask", sentMask, "mask.png"); }
    else if (inputs.mask.required) throw new Error(`${task} needs a mask: paint the region to change`);
  }
  if (inputs.box && S.box && (!sentMask || inputs.box.required)) req.box = S.box;
  if (inputs.points && S.points.length) req.points = S.points;
  for (const [name, inp] of Object.entries(inputs)) {
    if (name === "image" || name === "mask") continue;
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

async function run() {
  showError("");
  const task = $("task").value;
  const engine = $("engine").value;
  let form;
  try {
    form = await buildForm(task, engine, {
      options: S.engines[engine] ? collectOptions() : {},
      model: $("model").value.trim() || null,
    });
  } catch (e) { showError(e.message); return; }
  $("run").disabled = true;
  $("cancel").disabled = false;
  $("progress").removeAttribute("value"); // indeterminate until the first step
  $("preview-area").hidden = true;
  setStatus("queued", "queued…");
  try {
    const job = await (await api("/api/jobs", { method: "POST", body: form.fd })).json();
    S.job = { id: job.id, task, engine, seed: form.req.seed, before: S.imageURL, name: S.imageFile.name };
    listen(S.job);
  } catch (e) {
    finish("error", e.message);
  }
}

function listen(job) {
  const es = new EventSource(url(`/api/jobs/${job.id}/events`));
  let ended = false;
  es.addEventListener("progress", (ev) => {
    const d = JSON.parse(ev.data);
    $("progress").max = d.total;
    $("progress").value = d.step;
    setStatus("running", `${d.task}: step ${d.step}/${d.total} · ${d.elapsed.toFixed(1)} s`);
  });
  es.addEventListener("preview", (ev) => {
    const d = JSON.parse(ev.data);
    $("preview-area").hidden = false;
    $("preview").src = url(d.url, { step: d.step });
    $("preview-step").textContent = `(step ${d.step})`;
  });
  es.addEventListener("done", async (ev) => {
    ended = true;
    es.close();
    const d = JSON.parse(ev.data);
    if (!$("progress").hasAttribute("value") || $("progress").max <= 0) $("progress").max = 1;
    $("progress").value = $("progress").max;
    try {
      for (let i = 0; i < d.results; i++) await fetchResult(job, i);
      finish("done", `done: ${d.results} result${d.results === 1 ? "" : "s"}`);
    } catch (e) { finish("error", e.message); }
  });
  es.addEventListener("cancelled", () => { ended = true; es.close(); finish("cancelled", "cancelled"); });
  es.addEventListener("error", (ev) => {
    if (ev.data) { // the job's error event (not a connection problem)
      ended = true;
      es.close();
      finish("error", JSON.parse(ev.data).error);
    } else if (!ended && es.readyState === EventSource.CLOSED) {
      finish("error", "lost the connection to the server");
    } // otherwise the browser reconnects and the server replays the current state
  });
}

function finish(state, message) {
  if (state !== "done") { $("progress").max = 1; $("progress").value = 0; }
  setStatus(state, message);
  if (state === "error") showError(message);
  $("run").disabled = false;
  $("cancel").disabled = true;
}

async function cancel() {
  if (!S.job) return;
  $("cancel").disabled = true;
  setStatus("cancelling", "cancelling…");
  try { await api(`/api/jobs/${S.job.id}/cancel`, { method: "POST" }); } catch (e) { showError(e.message); }
}

async function fetchResult(job, index) {
  const res = await fetch(url(`/api/jobs/${job.id}/result`, { index }));
  if (!res.ok) throw new Error((await res.json().catch(() => ({}))).error || `result ${index}: ${res.status}`);
  const blob = await res.blob();
  const entry = {
    ...job, index, blob, url: URL.createObjectURL(blob),
    engine: res.headers.get("X-Diffcompose-Engine") || job.engine,
    seed: res.headers.get("X-Diffcompose-Seed") || job.seed,
  };
  if (job.task === "segment") await loadMaskFromBlob(blob);
  addThumb(entry);
  showResult(entry);
}

function resultName(e) {
  const base = (e.name || "image").replace(/\.[^.]*$/, "");
  return `${base}-${e.task}-${e.engine}-seed${e.seed}${e.index ? "-" + e.index : ""}.png`;
}

function showResult(e) {
  S.current = e;
  $("result-area").hidden = false;
  $("compare-before").src = e.before;
  $("compare-after").src = e.url;
  $("download").href = e.url;
  $("download").download = resultName(e);
  for (const f of document.querySelectorAll("#results-strip figure")) f.classList.toggle("current", f.entry === e);
}

function addThumb(e) {
  const fig = document.createElement("figure");
  fig.entry = e;
  fig.dataset.testid = "result-thumb";
  const img = document.createElement("img");
  img.src = e.url;
  img.alt = resultName(e);
  const cap = document.createElement("figcaption");
  cap.textContent = `${e.task} · ${e.engine} · ${e.seed}`;
  fig.append(img, cap);
  fig.addEventListener("click", () => showResult(e));
  $("results-strip").appendChild(fig);
}

// ------------------------------------------------------------------ mask from box/clicks

async function segmentMask() {
  showError("");
  const info = $("segment-info");
  const sam = S.engines.sam;
  const clicks = S.points.length > 0;
  let engine = clicks && sam && sam.available ? "sam" : "classical";
  let fellBack = false;
  if (!S.box && engine !== "sam") {
    showError(clicks ? "clicks need the sam engine, which this server lacks: draw a box for GrabCut"
                     : "draw a box around the object (Box tool) or click on it (Clicks tool)");
    return;
  }
  const once = async (name) => {
    const extra = { options: {}, model: name === "sam" ? $("sam-model").value.trim() || null : null };
    if (name !== "sam") extra.points = null; // GrabCut takes the box only
    const { fd } = await buildForm("segment", name, extra);
    return (await api("/api/run", { method: "POST", body: fd })).blob();
  };
  info.textContent = `segmenting with ${engine}…`;
  $("segment").disabled = true;
  try {
    let blob;
    try { blob = await once(engine); } catch (e) {
      if (engine === "sam" && S.box && e.status === 503) {
        info.textContent = `SAM unavailable (${e.message}); using GrabCut with the box`;
        engine = "classical";
        fellBack = true;
        blob = await once(engine);
      } else throw e;
    }
    await loadMaskFromBlob(blob);
    if (!fellBack) info.textContent = `mask from ${engine}`; // else keep saying why SAM was not used
  } catch (e) {
    info.textContent = "";
    showError(e.message);
  } finally {
    $("segment").disabled = false;
  }
}

// ------------------------------------------------------------------ wiring

function bindUI() {
  $("image-input").addEventListener("change", (ev) => { if (ev.target.files[0]) openImage(ev.target.files[0]); });
  const stage = $("stage");
  stage.addEventListener("dragover", (ev) => { ev.preventDefault(); stage.classList.add("dragover"); });
  stage.addEventListener("dragleave", () => stage.classList.remove("dragover"));
  stage.addEventListener("drop", (ev) => {
    ev.preventDefault();
    stage.classList.remove("dragover");
    const f = [...ev.dataTransfer.files].find((x) => x.type.startsWith("image/")) || ev.dataTransfer.files[0];
    if (f) openImage(f);
  });
  const ov = $("overlay-canvas");
  ov.addEventListener("pointerdown", onPointerDown);
  ov.addEventListener("pointermove", onPointerMove);
  ov.addEventListener("pointerup", onPointerUp);
  ov.addEventListener("pointercancel", onPointerUp);
  ov.addEventListener("pointerleave", () => drawOverlay());
  ov.addEventListener("contextmenu", (ev) => ev.preventDefault());
  new ResizeObserver(() => { if (S.W) resizeOverlay(); }).observe($("image-canvas"));

  for (const b of document.querySelectorAll(".tool")) b.addEventListener("click", () => setTool(b.dataset.tool));
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
  $("task").addEventListener("change", onTaskChange);
  $("engine").addEventListener("change", onEngineChange);
  $("run").addEventListener("click", run);
  $("cancel").addEventListener("click", cancel);
  $("compare-slider").addEventListener("input", (ev) => {
    $("compare-after-clip").style.clipPath = `inset(0 0 0 ${ev.target.value}%)`;
    $("compare-line").style.left = `${ev.target.value}%`;
  });
  $("use-result").addEventListener("click", () => {
    if (S.current) openImage(new File([S.current.blob], resultName(S.current), { type: "image/png" }));
  });

  document.addEventListener("keydown", (ev) => {
    const tag = (ev.target.tagName || "").toLowerCase();
    if (tag === "input" || tag === "textarea" || tag === "select") return;
    const mod = ev.ctrlKey || ev.metaKey;
    if (mod && ev.key.toLowerCase() === "z") { ev.preventDefault(); if (ev.shiftKey) redo(); else undo(); }
    else if (mod && ev.key.toLowerCase() === "y") { ev.preventDefault(); redo(); }
    else if (ev.key === "[") setBrush(S.brush / 1.15 - 1);
    else if (ev.key === "]") setBrush(S.brush * 1.15 + 1);
    else if (!mod && ev.key === "b") setTool("brush");
    else if (!mod && ev.key === "e") setTool("eraser");
    else if (!mod && ev.key === "x") setTool("box");
    else if (!mod && ev.key === "p") setTool("points");
  });
}

init();
