// evaluation.js: EvaluationPanel (core.js precedes it). Traits: skill, models ({label, color}),
// metric, table ({name, digits, values per model}), curves ({label: precision at recall 0..1}),
// sort_options, sort, listing ({i, image_id, prompt, values, key}), total, selected, shown
// ({i, image_id, prompt, size, truth, cells per model, answer}), hidden (labels), _image.

const CURVE_W = 310, CURVE_H = 190, PAD = 46;

function curveSvg(models, curves, hidden) {
  const x = (r) => PAD + r * (CURVE_W - PAD - 8), y = (p) => CURVE_H - 24 - p * (CURVE_H - 24 - 8);
  const parts = [`<svg class="mdnb-pr" width="${CURVE_W}" height="${CURVE_H}" viewBox="0 0 ${CURVE_W} ${CURVE_H}">`];
  for (const v of [0, 0.25, 0.5, 0.75, 1]) {
    parts.push(`<line class="mdnb-grid-line" x1="${x(0)}" x2="${x(1)}" y1="${y(v)}" y2="${y(v)}"/>`,
      `<text class="mdnb-tick" x="${PAD - 4}" y="${y(v) + 3}" text-anchor="end">${v}</text>`,
      `<text class="mdnb-tick" x="${x(v)}" y="${CURVE_H - 10}" text-anchor="middle">${v}</text>`);
  }
  parts.push(`<text class="mdnb-tick" x="${x(0.5)}" y="${CURVE_H}" text-anchor="middle">recall</text>`,
    `<text class="mdnb-tick" x="10" y="${y(0.5)}" text-anchor="middle" transform="rotate(-90 10 ${y(0.5)})">precision @ IoU 0.5</text>`);
  for (const m of models) {
    const pr = curves[m.label];
    if (!pr || hidden.has(m.label)) continue;
    const pts = pr.map((p, k) => `${x(k / 100).toFixed(1)},${y(p).toFixed(1)}`).join(" ");
    const c = String(m.color).replace(/[^#a-zA-Z0-9(),.% ]/g, "");
    parts.push(`<polyline class="mdnb-pr-line" data-label="${m.label.replace(/"/g, "")}" fill="none" stroke="${c}" stroke-width="2" points="${pts}"/>`);
  }
  parts.push("</svg>");
  return parts.join("");
}

function render({ model, el }) {
  const t0 = performance.now();
  el.classList.add("mdnb", "mdnb-evaluation");
  isolateKeys(el);
  const models = model.get("models");
  const table = h("table", { class: "mdnb-table mdnb-eval-table" });
  const curve = h("div", { class: "mdnb-eval-curve" });
  const sortSel = h("select", { class: "mdnb-eval-sort", "aria-label": "order of the images" });
  const list = h("div", { class: "mdnb-eval-list", tabindex: "0", "aria-label": "images, worst first" });
  const detail = h("div", { class: "mdnb-eval-detail" });
  const hint = h("div", { class: "mdnb-hint", text: "click an image (or ↑/↓ in the list) to see the truth and every model's output on it · click a model in the legend to hide it" });
  el.replaceChildren(
    h("div", { class: "mdnb-prompt", text: `evaluation · ${model.get("skill")} · ${model.get("total")} labelled image${model.get("total") === 1 ? "" : "s"}` }),
    h("div", { class: "mdnb-eval-top" }, table, curve),
    h("div", { class: "mdnb-eval-body" }, h("div", { class: "mdnb-eval-side" }, sortSel, list), detail),
    hint);

  const swatch = (color) => { const e = h("span", { class: "mdnb-swatch" }); e.style.background = color; return e; };
  const fmtv = (v, digits) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));

  function drawTable() {
    const head = h("tr", {}, h("th", { text: "" }), ...models.map((m) => h("th", { "data-label": m.label }, swatch(m.color), h("span", { text: " " + m.label }))));
    const rows = model.get("table").map((r) => h("tr", { "data-metric": r.name }, h("td", { text: r.name }),
      ...r.values.map((v, k) => h("td", { "data-label": models[k].label, text: fmtv(v, r.digits) }))));
    table.replaceChildren(head, ...rows);
  }

  function drawCurve() {
    const curves = model.get("curves") || {};
    curve.innerHTML = Object.keys(curves).length ? curveSvg(models, curves, new Set(model.get("hidden"))) : "";
  }

  function drawSort() {
    sortSel.replaceChildren(...model.get("sort_options").map((o) => {
      const opt = h("option", { value: o, text: o === "dataset" ? "dataset order" : o.startsWith("worst ") ? `worst first: ${o.slice(6)} (${model.get("metric")})` : `most disagreement: ${o.slice(13)}` });
      if (o === model.get("sort")) opt.selected = true;
      return opt;
    }));
  }
  sortSel.addEventListener("change", () => { model.set("sort", sortSel.value); model.save_changes(); });

  function select(i) { model.set("selected", i); model.save_changes(); }

  function drawList() {
    const rows = model.get("listing");
    const sel = model.get("selected");
    const head = h("div", { class: "mdnb-eval-row mdnb-eval-head" }, h("span", { text: "image" }),
      ...models.map((m) => h("span", { class: "mdnb-eval-v" }, swatch(m.color))));
    list.replaceChildren(head, ...rows.map((r) => {
      const row = h("div", { class: "mdnb-eval-row" + (r.i === sel ? " mdnb-selected" : ""), "data-i": r.i, title: `${r.image_id} · ${r.prompt}`,
        onclick: () => { select(r.i); list.focus(); } },
        h("span", { class: "mdnb-eval-id", text: `${r.image_id} · ${r.prompt}` }),
        ...r.values.map((v) => h("span", { class: "mdnb-eval-v", text: fmtv(v, 2) })));
      return row;
    }));
    const cur = list.querySelector(".mdnb-selected");
    if (cur && cur.scrollIntoView) cur.scrollIntoView({ block: "nearest" });
  }
  list.addEventListener("keydown", (e) => {
    const rows = model.get("listing");
    const at = rows.findIndex((r) => r.i === model.get("selected"));
    const step = e.key === "ArrowDown" || e.key === "j" ? 1 : e.key === "ArrowUp" || e.key === "k" ? -1 : 0;
    if (!step || !rows.length) return;
    e.preventDefault();
    select(rows[Math.min(rows.length - 1, Math.max(0, at + step))].i);
  });

  function drawDetail() {
    const shown = model.get("shown") || {};
    if (shown.i === undefined) { detail.replaceChildren(h("div", { class: "mdnb-status", text: "no image chosen" })); return; }
    const [W, H] = shown.size;
    const hidden = new Set(model.get("hidden"));
    const root = h("div", { class: "mdnb-stage" });
    const inner = h("div", { class: "mdnb-inner" });
    inner.style.aspectRatio = `${W} / ${H}`;
    const svg = s("svg", { class: "mdnb-svg", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none" });
    const marks = shown.cells.map((cell, k) => {
      if (hidden.has(models[k].label) || cell.missing) return "";
      const c = String(models[k].color).replace(/[^#a-zA-Z0-9(),.% ]/g, "");
      return `<g class="mdnb-roll" data-label="${models[k].label.replace(/"/g, "")}" stroke="${c}" fill="${c}">${marksMarkup(cell.p, cell.b, W, H)}</g>`;
    });
    svg.innerHTML = truthMarkup(shown.truth, W, H) + marks.join("");
    const img = h("img", { class: "mdnb-img", draggable: "false", alt: shown.image_id });
    inner.append(img, svg);
    root.append(inner);
    const width = Math.min(560, model.get("width") - 380);
    root.style.setProperty("--mdnb-width", `${width}px`);
    imageUrl(model, "_image").then((url) => { if (url) img.src = url; });
    requestAnimationFrame(() => setRadii(svg, pointRadiusPx(width), W / Math.max(1, svg.getBoundingClientRect().width || width)));
    const legend = h("div", { class: "mdnb-legend-row" }, ...models.map((m, k) => {
      const cell = shown.cells[k];
      const text = `${m.label}: ${model.get("metric")} ${fmtv(cell.score, 2)}` + (cell.answer !== undefined ? ` · “${cell.answer}”` : "");
      const entry = h("span", { class: "mdnb-legend-entry mdnb-eval-model" + (hidden.has(m.label) ? " mdnb-off" : ""), "data-label": m.label, role: "button",
        onclick: () => {
          const cur = new Set(model.get("hidden"));
          if (cur.has(m.label)) cur.delete(m.label); else cur.add(m.label);
          model.set("hidden", [...cur]); model.save_changes();
        } }, swatch(m.color), h("span", { text }));
      return entry;
    }), (shown.truth.b || shown.truth.p) ? h("span", { class: "mdnb-legend-entry" }, h("span", { class: "mdnb-swatch mdnb-truth-swatch" }), h("span", { text: "ground truth" })) : null,
    shown.answer !== null && shown.answer !== undefined ? h("span", { class: "mdnb-legend-entry", text: `truth: “${shown.answer}”` }) : null);
    detail.replaceChildren(h("div", { class: "mdnb-eval-title", text: `${shown.image_id} · ${shown.prompt}` }), legend, root);
  }

  const onHidden = () => { drawCurve(); drawDetail(); };
  model.on("change:listing", drawList);
  model.on("change:selected", drawList);
  model.on("change:shown", drawDetail);
  model.on("change:hidden", onHidden);
  model.on("change:sort", drawSort);
  drawTable(); drawCurve(); drawSort(); drawList(); drawDetail();
  markPainted(el, t0, null);
  return () => {
    model.off("change:listing", drawList); model.off("change:selected", drawList); model.off("change:shown", drawDetail);
    model.off("change:hidden", onHidden); model.off("change:sort", drawSort);
  };
}

export default { render };
