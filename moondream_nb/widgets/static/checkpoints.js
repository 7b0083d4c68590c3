// checkpoints.js: CheckpointBrowser (core.js precedes it). Traits: checkpoints (table rows),
// chosen (steps; -1 = base), offer_base, _images (ImageData references)/image_sizes, columns (per model:
// label, color, cells per image {p|b|answer, score}), skill, prompt, status.

const CELL_PX = 260; // a cell's image width (panels.css --mdnb-width)

function miniStage(urlPromise, W, H, cell, color, truth) {
  const root = h("div", { class: "mdnb-stage" });
  const inner = h("div", { class: "mdnb-inner" });
  inner.style.aspectRatio = `${W} / ${H}`;
  const svg = s("svg", { class: "mdnb-svg", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none" });
  const c = String(color).replace(/[^#a-zA-Z0-9(),.% ]/g, "");
  svg.innerHTML = truthMarkup(truth, W, H) + `<g class="mdnb-roll" stroke="${c}" fill="${c}">${marksMarkup(cell.p, cell.b, W, H)}</g>`;
  setRadii(svg, pointRadiusPx(CELL_PX), Math.max(W, H) / CELL_PX);
  const img = h("img", { class: "mdnb-img", draggable: "false", alt: "" });
  urlPromise.then((url) => { if (url) img.src = url; });
  inner.append(img, svg);
  root.append(inner);
  return root;
}

function render({ model, el }) {
  const t0 = performance.now();
  el.classList.add("mdnb", "mdnb-checkpoints");
  isolateKeys(el);
  const send = (msg) => model.send(msg);
  const status = h("span", { class: "mdnb-status" });
  const table = h("table", { class: "mdnb-table" });
  const grid = h("div", { class: "mdnb-grid" });
  const truths = model.get("truths") || [];
  const hasTruth = truths.some((t) => t && ((t.p || []).length + (t.b || []).length) > 0);
  const truthBtn = hasTruth ? h("button", { class: "mdnb-btn", "data-act": "truth", title: "ground truth", text: "truth",
    onclick: () => { model.set("show_truth", !model.get("show_truth")); model.save_changes(); } }) : null;
  const legend = h("div", { class: "mdnb-legend-row" });
  el.replaceChildren(
    h("div", { class: "mdnb-prompt", text: model.get("prompt") }),
    h("div", { class: "mdnb-toolbar" },
      h("button", { class: "mdnb-btn mdnb-primary", "data-act": "run", text: "Run chosen", onclick: () => { status.textContent = "running…"; send({ type: "run" }); } }),
      h("button", { class: "mdnb-btn", "data-act": "save", text: "Save current step", onclick: () => send({ type: "save" }) }),
      h("button", { class: "mdnb-btn", "data-act": "refresh", text: "Refresh", onclick: () => send({ type: "refresh" }) }),
      truthBtn,
      status),
    table, legend, grid);

  function toggle(step, on) {
    const cur = new Set(model.get("chosen"));
    if (on) cur.add(step); else cur.delete(step);
    model.set("chosen", [...cur].sort((a, b) => a - b));
    model.save_changes();
  }

  function drawTable() {
    const chosen = new Set(model.get("chosen"));
    const base = model.get("offer_base") ? [{ step: -1, checkpoint_id: "base model", created: "", expires: "" }] : [];
    const rows = [...base, ...model.get("checkpoints")];
    const head = h("tr", {}, ...["", "step", "checkpoint", "created (UTC)", "expires", ""].map((t) => h("th", { text: t })));
    const body = rows.map((r) => {
      const box = h("input", { type: "checkbox", "data-step": r.step, "aria-label": `choose ${r.step}` });
      box.checked = chosen.has(r.step);
      box.addEventListener("change", () => toggle(r.step, box.checked));
      const del = r.step >= 0 ? h("button", { class: "mdnb-btn", "data-act": "delete", "data-step": r.step, text: "delete",
        onclick: () => { if (confirm(`Delete the checkpoint at step ${r.step}?`)) send({ type: "delete", step: r.step }); } }) : "";
      return h("tr", {}, h("td", {}, box), h("td", { text: r.step >= 0 ? r.step : "–" }), h("td", { text: r.checkpoint_id }),
        h("td", { text: r.created }), h("td", { text: r.expires }), h("td", {}, del));
    });
    table.replaceChildren(head, ...body);
  }

  function drawLegend() {
    const cols = model.get("columns") || [];
    const entry = (swatch, text) => h("span", { class: "mdnb-legend-entry" }, swatch, h("span", { text }));
    const sw = (color) => { const e = h("span", { class: "mdnb-swatch" }); e.style.background = color; return e; };
    legend.replaceChildren(...cols.map((c) => entry(sw(c.color), c.label)),
      ...(hasTruth ? [entry(h("span", { class: "mdnb-swatch mdnb-truth-swatch" }), "ground truth")] : []));
    grid.classList.toggle("mdnb-truth-off", !model.get("show_truth"));
    if (truthBtn) truthBtn.classList.toggle("mdnb-active", model.get("show_truth"));
  }

  function drawGrid() {
    drawLegend();
    const cols = model.get("columns") || [];
    const sizes = model.get("image_sizes");
    grid.style.gridTemplateColumns = `repeat(${Math.max(1, cols.length)}, minmax(160px, 260px))`;
    const cells = [];
    for (const c of cols) {
      const mean = c.cells.filter((x) => x.score !== null && x.score !== undefined);
      const avg = mean.length ? mean.reduce((a, x) => a + x.score, 0) / mean.length : null;
      cells.push(h("div", { class: "mdnb-cell" }, h("b", { text: c.label }), avg !== null ? h("span", { class: "mdnb-score", text: `mean score ${fmt(avg)}` }) : null));
    }
    sizes.forEach(([W, H], i) => {
      for (const c of cols) {
        const cell = c.cells[i] || {};
        cells.push(h("div", { class: "mdnb-cell", "data-label": c.label, "data-image": i },
          miniStage(imageUrl(model, "_images", i), W, H, cell, c.color, truths[i]),
          cell.answer !== undefined ? h("span", { class: "mdnb-answer", text: cell.answer }) : null,
          cell.score !== null && cell.score !== undefined ? h("span", { class: "mdnb-score", text: `score ${fmt(cell.score)}` }) : null));
      }
    });
    grid.replaceChildren(...cells);
  }
  const drawStatus = () => { status.textContent = model.get("status"); };
  model.on("change:checkpoints", drawTable);
  model.on("change:chosen", drawTable);
  model.on("change:columns", drawGrid);
  model.on("change:status", drawStatus);
  model.on("change:show_truth", drawLegend);
  drawTable(); drawGrid(); drawStatus();
  markPainted(el, t0, null);
  return () => {
    model.off("change:checkpoints", drawTable); model.off("change:chosen", drawTable);
    model.off("change:columns", drawGrid); model.off("change:status", drawStatus); model.off("change:show_truth", drawLegend);
  };
}

export default { render };
