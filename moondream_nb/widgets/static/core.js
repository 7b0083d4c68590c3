// core.js: shared by every moondream-nb panel (concatenated in front of each panel's ESM by
// Python, so there is no bundler and no runtime import). An image with an SVG overlay in image
// pixel units, zoom and pan, shape drawing, and small DOM helpers. Coordinates in the model are
// always normalized 0-1; pixels exist only here.

const SVGNS = "http://www.w3.org/2000/svg";
const POINT_RADIUS_PX = 5; // on screen at least, whatever the zoom ...
const POINT_RADIUS_FRACTION = 0.009; // ... and this much of the displayed image's width (9 px at most)
const HANDLE_PX = 6;

// Screen radius of a point for an image shown `width` CSS px wide (at zoom 1).
function pointRadiusPx(width) {
  return Math.min(9, Math.max(POINT_RADIUS_PX, POINT_RADIUS_FRACTION * width));
}

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) el.append(c);
  return el;
}

function s(tag, attrs = {}) {
  const el = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) el.setAttribute(k, v);
  return el;
}

const clamp01 = (v) => Math.min(1, Math.max(0, v));
const round6 = (v) => Math.round(v * 1e6) / 1e6;

// Image bytes live in a model of their own (Python's ImageData) that a panel's trait references
// as "IPY_MODEL_<id>": sent once, and a host that shows a widget's state as its value (marimo)
// shows the reference, not the JPEG. One object URL per image model: re-rendering a view or
// opening a second one reuses the bytes; nothing is re-sent or re-decoded from base64.
const _urls = new WeakMap();
async function imageUrl(model, key = "_image", index = undefined) {
  let ref = model.get(key);
  if (index !== undefined) ref = (ref || [])[index];
  if (typeof ref !== "string" || !ref.startsWith("IPY_MODEL_")) return "";
  const image = await model.widget_manager.get_model(ref.slice("IPY_MODEL_".length));
  let url = _urls.get(image);
  if (url === undefined) {
    const data = image.get("data");
    url = data && data.byteLength ? URL.createObjectURL(new Blob([data], { type: image.get("mime") || "image/jpeg" })) : "";
    _urls.set(image, url);
  }
  return url;
}

// Per-model scratch state shared by all views of one widget (undo stacks, selection focus).
const _scratch = new WeakMap();
function scratch(model) {
  let st = _scratch.get(model);
  if (!st) _scratch.set(model, (st = { undo: [], redo: [] }));
  return st;
}

// Keys typed into a panel must not reach JupyterLab's command-mode shortcuts ("d d" deletes a
// cell, digits change cell types). JupyterLab sees keydown in the bubbling phase, so stopping
// propagation at the panel is enough there; Notebook 7 sees it in the capture phase, before the
// panel, and Lumino only skips a binding when it meets [data-lm-suppress-shortcuts] on its walk up
// from the target *before* an element that matches the binding's selector (the command-mode
// bindings match any `:focus` element, i.e. the focused target itself). So the attribute goes on
// the panel and on whatever element inside it takes focus (the stage, buttons, fields).
function isolateKeys(el) {
  el.setAttribute("data-lm-suppress-shortcuts", "true");
  el.addEventListener("focusin", (e) => {
    if (e.target instanceof Element) e.target.setAttribute("data-lm-suppress-shortcuts", "true");
  });
  el.addEventListener("keydown", (e) => { e.stopPropagation(); markSessionActive(el); });
  el.addEventListener("keypress", (e) => e.stopPropagation());
  el.addEventListener("pointerdown", () => markSessionActive(el));
  requestAnimationFrame(() => takeSessionFocus(el)); // after the panel has built its stage
}

// A session (Python's SessionView, class mdnb-session) swaps one panel for the next on Enter,
// PageDown, x: the old panel leaves the page with the keyboard focus. The new one takes it when
// the person was working in the session a moment ago and nothing else holds the focus, so the
// next key works without a click. Nothing is focused outside sessions or while typing elsewhere.
const SESSION_FOCUS_MS = 15000;
function markSessionActive(el) {
  const session = el.closest(".mdnb-session");
  if (session) session.dataset.mdnbActive = String(Date.now());
}
function takeSessionFocus(el, tries = 30) {
  if (!el.isConnected) { // views are attached after render
    if (tries > 0) requestAnimationFrame(() => takeSessionFocus(el, tries - 1));
    return;
  }
  const session = el.closest(".mdnb-session");
  if (!session || Date.now() - +(session.dataset.mdnbActive || 0) > SESSION_FOCUS_MS) return;
  const active = document.activeElement;
  if (active && active !== document.body && active.isConnected && !session.contains(active)) return;
  const target = el.tabIndex >= 0 ? el : el.querySelector(".mdnb-stage[tabindex]") || el.querySelector("[tabindex]");
  if (target) target.focus({ preventScroll: true });
}

// The stage: <img> + <svg viewBox="0 0 W H"> inside a transformed wrapper (zoom/pan).
function createStage(model, { sizeKey = "image_size", imageKey = "_image", width } = {}) {
  const [W, H] = model.get(sizeKey) || [1, 1];
  const root = h("div", { class: "mdnb-stage", tabindex: "0" });
  const cssWidth = width ?? model.get("width");
  if (cssWidth) root.style.setProperty("--mdnb-width", `${cssWidth}px`);
  const inner = h("div", { class: "mdnb-inner" });
  const img = h("img", { class: "mdnb-img", draggable: "false", alt: "" });
  const svg = s("svg", { class: "mdnb-svg", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none" });
  inner.style.aspectRatio = `${W} / ${H}`;
  inner.append(img, svg);
  root.append(inner);
  const loaded = imageUrl(model, imageKey).then((url) => { if (url) img.src = url; return url; });
  const view = { z: 1, tx: 0, ty: 0 };
  const stage = { root, inner, img, svg, W, H, view, listeners: [] };

  // Image pixels per screen pixel: keeps point radii and handles a constant size on screen.
  stage.unit = () => {
    const r = svg.getBoundingClientRect();
    return r.width > 0 ? W / r.width : 1;
  };
  stage.toNorm = (e) => {
    const r = svg.getBoundingClientRect();
    return [clamp01((e.clientX - r.left) / r.width), clamp01((e.clientY - r.top) / r.height)];
  };
  stage.apply = () => {
    inner.style.transform = `translate(${view.tx}px, ${view.ty}px) scale(${view.z})`;
    stage.rescale();
  };
  stage.radius = () => pointRadiusPx(svg.getBoundingClientRect().width / view.z || 0);
  stage.rescale = () => {
    const u = stage.unit();
    setRadii(svg, stage.radius(), u);
    for (const c of svg.querySelectorAll("rect.mdnb-handle")) {
      const cx = +c.dataset.cx, cy = +c.dataset.cy;
      c.setAttribute("x", cx - HANDLE_PX * u);
      c.setAttribute("y", cy - HANDLE_PX * u);
      c.setAttribute("width", 2 * HANDLE_PX * u);
      c.setAttribute("height", 2 * HANDLE_PX * u);
    }
    for (const t of svg.querySelectorAll("text.mdnb-label")) t.setAttribute("font-size", 12 * u);
  };
  stage.zoomAt = (factor, clientX, clientY) => {
    const r = root.getBoundingClientRect();
    const px = (clientX ?? r.left + r.width / 2) - r.left, py = (clientY ?? r.top + r.height / 2) - r.top;
    const z = Math.min(16, Math.max(1, view.z * factor));
    view.tx = px - ((px - view.tx) * z) / view.z;
    view.ty = py - ((py - view.ty) * z) / view.z;
    view.z = z;
    if (z === 1) view.tx = view.ty = 0;
    stage.apply();
  };
  stage.fit = () => { view.z = 1; view.tx = view.ty = 0; stage.apply(); };
  root.addEventListener("wheel", (e) => {
    if (!(e.ctrlKey || e.metaKey || e.altKey)) return; // plain wheel scrolls the notebook
    e.preventDefault();
    stage.zoomAt(Math.exp(-e.deltaY * 0.002), e.clientX, e.clientY);
  }, { passive: false });
  // Pan: middle button, or Shift+drag, anywhere; panels call stage.startPan for plain drags.
  stage.startPan = (e) => {
    const x0 = e.clientX, y0 = e.clientY, tx0 = view.tx, ty0 = view.ty;
    const move = (ev) => { view.tx = tx0 + ev.clientX - x0; view.ty = ty0 + ev.clientY - y0; stage.apply(); };
    const up = () => { window.removeEventListener("pointermove", move); window.removeEventListener("pointerup", up); };
    window.addEventListener("pointermove", move);
    window.addEventListener("pointerup", up);
  };
  root.addEventListener("pointerdown", (e) => {
    if (e.button === 1 || (e.button === 0 && e.shiftKey && view.z > 1)) { e.preventDefault(); e.stopPropagation(); stage.startPan(e); }
  }, true);
  const ro = new ResizeObserver(() => stage.rescale());
  ro.observe(root);
  stage.destroy = () => ro.disconnect();
  // Resolves once the image is decoded and laid out (first paint measurements wait for it).
  stage.ready = loaded.then((url) => (url ? img.decode().catch(() => {}) : null)).then(() => stage.rescale());
  return stage;
}

// Overlay markup readable on any image: every mark sits on a dark halo (a light mark keeps an
// edge on a light background) and points have a white rim (a dark mark on a dark one). Built as
// one string per panel (far faster than createElementNS per mark); coordinates in image pixels,
// radii set by stage.rescale. Colour comes from the enclosing <g>'s stroke/fill.
const _f = (v) => +v.toFixed(2);
function marksMarkup(points, boxes, W, H) {
  const parts = [];
  if (boxes && boxes.length) {
    // One path holds the halos of all of a rollout's boxes: 800 boxes paint as 816 elements, not 1,600.
    const d = boxes.map((b) => `M${_f(b[0] * W)} ${_f(b[1] * H)}H${_f(b[2] * W)}V${_f(b[3] * H)}H${_f(b[0] * W)}Z`).join("");
    parts.push(`<path class="mdnb-halo" d="${d}"/>`);
  }
  for (const b of boxes || []) {
    parts.push(`<rect class="mdnb-shape mdnb-box" x="${_f(b[0] * W)}" y="${_f(b[1] * H)}" width="${_f((b[2] - b[0]) * W)}" height="${_f((b[3] - b[1]) * H)}"/>`);
  }
  for (const p of points || []) {
    const a = `cx="${_f(p[0] * W)}" cy="${_f(p[1] * H)}"`;
    parts.push(`<circle class="mdnb-halo" data-rp="2.5" ${a}/><circle class="mdnb-shape mdnb-pt" ${a}/>`);
  }
  return parts.join("");
}

// Radii of an overlay's circles for a screen point radius R and u image px per screen px. Circles
// carry data-rp: screen px beyond R (halos and truth rings are larger); badges keep a screen size.
function setRadii(svg, R, u) {
  for (const c of svg.querySelectorAll("circle.mdnb-pt, circle[data-rp]")) c.setAttribute("r", (R + +(c.dataset.rp || 0)) * u);
  for (const b of svg.querySelectorAll("g.mdnb-badge")) {
    b.setAttribute("transform", `translate(${+b.dataset.cx + (R + 2) * u} ${+b.dataset.cy - (R + 2) * u}) scale(${u})`);
  }
}

// Ground truth: white dashed boxes and white rings (no rollout colour is white), on dark halos.
function truthMarkup(truth, W, H) {
  if (!truth) return "";
  const parts = ['<g class="mdnb-truth">'];
  for (const b of truth.b || []) {
    const a = `x="${_f(b[0] * W)}" y="${_f(b[1] * H)}" width="${_f((b[2] - b[0]) * W)}" height="${_f((b[3] - b[1]) * H)}"`;
    parts.push(`<rect class="mdnb-truth-halo" ${a}/><rect class="mdnb-truth-box" ${a}/>`);
  }
  for (const p of truth.p || []) {
    const a = `cx="${_f(p[0] * W)}" cy="${_f(p[1] * H)}"`;
    parts.push(`<circle class="mdnb-truth-halo" data-rp="5" ${a}/><circle class="mdnb-truth-ring" data-rp="5" ${a}/>`);
  }
  parts.push("</g>");
  return parts.join("");
}

// Where several rollouts put a point on (nearly) the same spot, one badge "×k" says how many;
// data-rs lists them (hovering it lights their legend rows). Cells of 1 % of the image.
function coincidentMarkup(rolls, W, H) {
  const cells = new Map();
  rolls.forEach((roll, i) => {
    for (const p of roll.p || []) {
      const key = `${Math.round(p[0] * 100)},${Math.round(p[1] * 100)}`;
      const cell = cells.get(key) || { x: p[0], y: p[1], rs: new Set() };
      cell.rs.add(i);
      cells.set(key, cell);
    }
  });
  const parts = [];
  for (const c of cells.values()) {
    if (c.rs.size < 2) continue;
    const rs = [...c.rs].join(",");
    parts.push(`<g class="mdnb-badge" data-rs="${rs}" data-cx="${_f(c.x * W)}" data-cy="${_f(c.y * H)}">` +
      `<title>rollouts ${[...c.rs].map((i) => "#" + (i + 1)).join(" ")} point here</title>` +
      `<rect x="-2" y="-11" width="${c.rs.size >= 10 ? 26 : 20}" height="14" rx="3"/><text x="1" y="0">×${c.rs.size}</text></g>`);
  }
  return parts.join("");
}

// Draw one shape in image pixel units; data-i carries its index for hit-testing.
function shapeEl(shape, i, W, H, u) {
  const color = shape.color || "#ffcc00";
  let el;
  if (shape.type === "point") {
    el = s("circle", { class: "mdnb-shape mdnb-pt", cx: shape.x * W, cy: shape.y * H, r: POINT_RADIUS_PX * u });
    el.style.fill = color;
  } else {
    el = s("rect", {
      class: "mdnb-shape mdnb-box",
      x: shape.x_min * W, y: shape.y_min * H,
      width: Math.max(0, (shape.x_max - shape.x_min) * W), height: Math.max(0, (shape.y_max - shape.y_min) * H),
    });
    el.style.stroke = color;
  }
  el.dataset.i = i;
  return el;
}

function labelEl(shape, W, H, u) {
  if (!shape.label) return null;
  const x = (shape.type === "point" ? shape.x : shape.x_min) * W;
  const y = (shape.type === "point" ? shape.y : shape.y_min) * H;
  const t = s("text", { class: "mdnb-label", x: x + 2 * u, y: y - 3 * u, "font-size": 12 * u });
  t.style.fill = shape.color || "#ffcc00";
  t.textContent = shape.label;
  return t;
}

// Record the first paint of a panel: render start -> image decoded, overlay built, frame shown.
function markPainted(el, t0, stage) {
  el.dataset.buildMs = (performance.now() - t0).toFixed(1); // synchronous DOM work only
  (stage ? stage.ready : Promise.resolve()).then(() => { el.dataset.decodedMs = (performance.now() - t0).toFixed(1); requestAnimationFrame(() => {
    el.dataset.paintMs = (performance.now() - t0).toFixed(1);
    el.classList.add("mdnb-painted");
  }); });
}

function fmt(v, digits = 2) {
  return v === null || v === undefined || Number.isNaN(v) ? "–" : Number(v).toFixed(digits);
}
