// canvas.js: the editable canvas (ImageCanvas, TargetEditor). Needs core.js before it.
// Model traits: _image (an ImageData reference), image_size, layers (normalized shapes), mode, modes, selected.

const MODE_KEYS = { v: "view", p: "point", b: "box", s: "select" };
const MODE_TITLES = { view: "View (v)", point: "Point: click to add (p)", box: "Box: drag to draw (b)", select: "Select: move/resize (s)" };
const CORNERS = { nw: ["x_min", "y_min"], ne: ["x_max", "y_min"], sw: ["x_min", "y_max"], se: ["x_max", "y_max"] };
const DRAG_SLOP_PX = 3;

function tidyBox(b) {
  const out = { ...b };
  if (out.x_min > out.x_max) [out.x_min, out.x_max] = [out.x_max, out.x_min];
  if (out.y_min > out.y_max) [out.y_min, out.y_max] = [out.y_max, out.y_min];
  for (const k of ["x_min", "y_min", "x_max", "y_max"]) out[k] = round6(clamp01(out[k]));
  return out;
}

function moved(shape, dx, dy) {
  if (shape.type === "point") return { ...shape, x: round6(clamp01(shape.x + dx)), y: round6(clamp01(shape.y + dy)) };
  // Keep the box's size when it hits an edge instead of squashing it.
  const w = shape.x_max - shape.x_min, hgt = shape.y_max - shape.y_min;
  const x0 = Math.min(1 - w, Math.max(0, shape.x_min + dx)), y0 = Math.min(1 - hgt, Math.max(0, shape.y_min + dy));
  return { ...shape, x_min: round6(x0), y_min: round6(y0), x_max: round6(x0 + w), y_max: round6(y0 + hgt) };
}

function resized(box, dx, dy) {
  // Grow or shrink from the right/bottom edge, never past the left/top one or the image.
  const minW = 1e-3;
  const x1 = Math.min(1, Math.max(box.x_min + minW, box.x_max + dx)), y1 = Math.min(1, Math.max(box.y_min + minW, box.y_max + dy));
  return { ...box, x_max: round6(x1), y_max: round6(y1) };
}

function renderCanvas(model, el) {
  const t0 = performance.now();
  el.classList.add("mdnb", "mdnb-canvas");
  isolateKeys(el);
  const stage = createStage(model);
  const { svg, root, W, H } = stage;
  const g = s("g", { class: "mdnb-layers" });
  const hg = s("g", { class: "mdnb-handles" });
  const ghost = s("rect", { class: "mdnb-ghost" });
  svg.append(g, hg);

  // --- toolbar ------------------------------------------------------------------------
  const modeButtons = {};
  const modeBar = h("span", { class: "mdnb-modes" });
  for (const m of model.get("modes") || []) {
    const b = h("button", { class: "mdnb-btn", "data-mode": m, title: MODE_TITLES[m] || m, text: m,
      onclick: () => { model.set("mode", m); model.save_changes(); root.focus(); } });
    modeButtons[m] = b;
    modeBar.append(b);
  }
  const count = h("span", { class: "mdnb-count" });
  // A view-only canvas (e.g. a query's image) gets zoom buttons only.
  const editable = (model.get("modes") || []).some((m) => m !== "view");
  const toolbar = h("div", { class: "mdnb-toolbar" }, editable ? modeBar : null,
    editable ? h("button", { class: "mdnb-btn", "data-act": "undo", title: "Undo (Ctrl/Cmd-Z)", text: "↶", onclick: () => undo() }) : null,
    editable ? h("button", { class: "mdnb-btn", "data-act": "redo", title: "Redo (Shift-Ctrl/Cmd-Z)", text: "↷", onclick: () => redo() }) : null,
    editable ? h("button", { class: "mdnb-btn", "data-act": "delete", title: "Delete selection (Del)", text: "✕", onclick: () => removeSelected() }) : null,
    h("button", { class: "mdnb-btn", "data-act": "zoom-in", title: "Zoom in (+, Ctrl-wheel)", text: "+", onclick: () => stage.zoomAt(1.5) }),
    h("button", { class: "mdnb-btn", "data-act": "zoom-out", title: "Zoom out (-)", text: "−", onclick: () => stage.zoomAt(1 / 1.5) }),
    h("button", { class: "mdnb-btn", "data-act": "fit", title: "Fit (f)", text: "⤢", onclick: () => stage.fit() }),
    editable ? count : null);
  el.replaceChildren(toolbar, root);

  // --- drawing ------------------------------------------------------------------------
  let work = null; // layers being dragged (not yet committed)
  let pending = false;
  function draw() {
    const layers = work || model.get("layers") || [];
    const sel = model.get("selected");
    const u = stage.unit();
    const nodes = [];
    layers.forEach((shape, i) => {
      const e = shapeEl(shape, i, W, H, u);
      if (i === sel) e.classList.add("mdnb-selected");
      const halo = e.cloneNode(false);  // a dark edge under the mark (core.js marksMarkup)
      halo.setAttribute("class", "mdnb-halo");
      halo.removeAttribute("style");
      delete halo.dataset.i;
      if (shape.type === "point") halo.dataset.rp = "2.5";
      nodes.push(halo, e);
      const l = labelEl(shape, W, H, u);
      if (l) nodes.push(l);
    });
    g.replaceChildren(...nodes);
    hg.replaceChildren();
    const cur = layers[sel];
    if (cur && cur.type === "box" && model.get("mode") !== "view") {
      for (const [name, [kx, ky]] of Object.entries(CORNERS)) {
        const hd = s("rect", { class: "mdnb-handle" });
        hd.dataset.handle = name;
        hd.dataset.cx = cur[kx] * W;
        hd.dataset.cy = cur[ky] * H;
        hg.append(hd);
      }
    }
    if (ghost.isConnected) hg.append(ghost);
    stage.rescale();
    const np = layers.filter((x) => x.type === "point").length;
    count.textContent = `${np} point${np === 1 ? "" : "s"} · ${layers.length - np} box${layers.length - np === 1 ? "" : "es"}`;
  }
  function redrawSoon() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; draw(); });
  }
  function syncMode() {
    const mode = model.get("mode");
    for (const [m, b] of Object.entries(modeButtons)) b.classList.toggle("mdnb-active", m === mode);
    root.dataset.mode = mode;
    draw();
  }

  // --- edits (each commit is one undo step) ---------------------------------------------
  function commit(layers, selected) {
    const st = scratch(model);
    st.undo.push(model.get("layers"));
    if (st.undo.length > 500) st.undo.shift();
    st.redo = [];
    model.set("layers", layers);
    if (selected !== undefined) model.set("selected", selected);
    model.save_changes();
  }
  function undo() {
    const st = scratch(model);
    if (!st.undo.length) return;
    st.redo.push(model.get("layers"));
    const prev = st.undo.pop();
    model.set("layers", prev);
    if (model.get("selected") >= prev.length) model.set("selected", -1);
    model.save_changes();
  }
  function redo() {
    const st = scratch(model);
    if (!st.redo.length) return;
    st.undo.push(model.get("layers"));
    const next = st.redo.pop();
    model.set("layers", next);
    if (model.get("selected") >= next.length) model.set("selected", -1);
    model.save_changes();
  }
  function removeSelected() {
    const sel = model.get("selected");
    const layers = model.get("layers") || [];
    if (sel < 0 || sel >= layers.length) return;
    commit(layers.filter((_, i) => i !== sel), -1);
  }
  function select(i) { model.set("selected", i); model.save_changes(); }

  // --- pointer --------------------------------------------------------------------------
  svg.addEventListener("pointerdown", (e) => {
    if (e.button !== 0) return;
    root.focus({ preventScroll: true });
    const mode = model.get("mode");
    const layers = model.get("layers") || [];
    const start = stage.toNorm(e);
    const x0 = e.clientX, y0 = e.clientY;
    const far = (ev) => Math.hypot(ev.clientX - x0, ev.clientY - y0) > DRAG_SLOP_PX;
    const t = e.target;
    let onMove = null, onUp = null;

    if (mode === "view") {
      if (stage.view.z > 1) stage.startPan(e);
      return;
    }
    e.preventDefault();
    if (t.dataset.handle !== undefined) {
      const sel = model.get("selected");
      const [kx, ky] = CORNERS[t.dataset.handle];
      onMove = (ev) => {
        const [nx, ny] = stage.toNorm(ev);
        work = layers.slice();
        work[sel] = { ...layers[sel], [kx]: nx, [ky]: ny };
        redrawSoon();
      };
      onUp = () => { if (work) commit(layers.map((x, i) => (i === sel ? tidyBox(work[sel]) : x))); };
    } else if (t.dataset.i !== undefined && (mode !== "box" || e.altKey)) {
      // Move a shape: in select and point mode, or with Alt in box mode (where a drag always
      // draws, so a new box over an existing one never moves it instead).
      const i = +t.dataset.i;
      if (model.get("selected") !== i) select(i);
      onMove = (ev) => {
        if (!far(ev) && !work) return;
        const [nx, ny] = stage.toNorm(ev);
        work = layers.slice();
        work[i] = moved(layers[i], nx - start[0], ny - start[1]);
        redrawSoon();
      };
      onUp = () => { if (work) commit(work.slice(), i); };
    } else if (mode === "point") {
      onUp = (ev) => {
        if (far(ev)) return;
        const [nx, ny] = stage.toNorm(ev);
        const pt = { type: "point", x: round6(nx), y: round6(ny) };
        const color = model.get("draw_color");
        if (color) pt.color = color;
        commit([...layers, pt], layers.length);
      };
    } else if (mode === "box") {
      onMove = (ev) => {
        if (!far(ev)) return;
        const [nx, ny] = stage.toNorm(ev);
        if (!ghost.isConnected) hg.append(ghost);
        ghost.setAttribute("x", Math.min(start[0], nx) * W);
        ghost.setAttribute("y", Math.min(start[1], ny) * H);
        ghost.setAttribute("width", Math.abs(nx - start[0]) * W);
        ghost.setAttribute("height", Math.abs(ny - start[1]) * H);
      };
      const under = t.dataset.i !== undefined ? +t.dataset.i : -1;
      onUp = (ev) => {
        ghost.remove();
        if (!far(ev)) { if (model.get("selected") !== under) select(under); return; }  // a click selects what it hit
        const [nx, ny] = stage.toNorm(ev);
        const box = tidyBox({ type: "box", x_min: start[0], y_min: start[1], x_max: nx, y_max: ny });
        const color = model.get("draw_color");
        if (color) box.color = color;
        commit([...layers, box], layers.length);
      };
    } else {
      if (model.get("selected") !== -1) select(-1);
      if (stage.view.z > 1) stage.startPan(e);
      return;
    }
    svg.setPointerCapture(e.pointerId);
    const move = (ev) => onMove && onMove(ev);
    const up = (ev) => {
      svg.removeEventListener("pointermove", move);
      svg.removeEventListener("pointerup", up);
      svg.removeEventListener("pointercancel", up);
      try { if (ev.type === "pointerup" && onUp) onUp(ev); } finally { work = null; draw(); }
    };
    svg.addEventListener("pointermove", move);
    svg.addEventListener("pointerup", up);
    svg.addEventListener("pointercancel", up);
  });

  // --- keyboard -------------------------------------------------------------------------
  root.addEventListener("keydown", (e) => {
    const mod = e.ctrlKey || e.metaKey;
    const k = e.key;
    let handled = true;
    if (mod && (k === "z" || k === "Z")) (e.shiftKey ? redo : undo)();
    else if (mod && (k === "y" || k === "Y")) redo();
    else if (k === "Delete" || k === "Backspace") removeSelected();
    else if (k === "Escape") select(-1);
    else if (!mod && MODE_KEYS[k] && (model.get("modes") || []).includes(MODE_KEYS[k])) { model.set("mode", MODE_KEYS[k]); model.save_changes(); }
    else if (k === "+" || k === "=") stage.zoomAt(1.5);
    else if (k === "-") stage.zoomAt(1 / 1.5);
    else if (k === "f") stage.fit();
    else if (k === "Tab" && (model.get("layers") || []).length) {
      // Tab / Shift-Tab cycle the selection through the shapes.
      const n = model.get("layers").length, sel = model.get("selected");
      select(sel < 0 ? (e.shiftKey ? n - 1 : 0) : (sel + (e.shiftKey ? n - 1 : 1)) % n);
    } else if (k.startsWith("Arrow") && model.get("selected") >= 0) {
      // Arrows nudge the selection one screen pixel; Shift-arrows resize a box (its right or
      // bottom edge); Alt makes either ten pixels.
      const step = (e.altKey ? 10 : 1) * stage.unit();
      const dx = k === "ArrowLeft" ? -step / W : k === "ArrowRight" ? step / W : 0;
      const dy = k === "ArrowUp" ? -step / H : k === "ArrowDown" ? step / H : 0;
      const layers = model.get("layers"), sel = model.get("selected");
      const edit = (x) => (e.shiftKey && x.type === "box" ? resized(x, dx, dy) : moved(x, dx, dy));
      commit(layers.map((x, i) => (i === sel ? edit(x) : x)), sel);
    } else handled = false;
    if (handled) e.preventDefault();
  });

  const onLayers = () => draw();
  model.on("change:layers", onLayers);
  model.on("change:selected", onLayers);
  model.on("change:mode", syncMode);
  syncMode();
  markPainted(el, t0, stage);
  return () => {
    model.off("change:layers", onLayers);
    model.off("change:selected", onLayers);
    model.off("change:mode", syncMode);
    stage.destroy();
  };
}
