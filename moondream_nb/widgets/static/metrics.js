// metrics.js: MetricsPanel (core.js precedes it). Traits: series ({name: [[step, value], ...]}),
// order (names, display order), smoothing (EMA weight 0-0.99), status.

function ema(values, w) {
  // TensorBoard-style EMA with bias correction, so the first points are not dragged to 0.
  let acc = 0, n = 0;
  return values.map((v) => { n += 1; acc = w * acc + (1 - w) * v; return w > 0 ? acc / (1 - Math.pow(w, n)) : v; });
}

function chart(name, pts, w, band) {
  const VW = 300, VH = 120, PAD = 4;
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  let lo = Math.min(...ys), hi = Math.max(...ys);
  if (band) for (const [, m, sd] of band) { lo = Math.min(lo, m - sd); hi = Math.max(hi, m + sd); }
  if (hi - lo < 1e-12) { hi += 0.5; lo -= 0.5; }
  const x0 = Math.min(...xs), x1 = Math.max(...xs);
  const X = (x) => PAD + ((x - x0) / Math.max(1e-12, x1 - x0 || 1)) * (VW - 2 * PAD);
  const Y = (y) => VH - PAD - ((y - lo) / (hi - lo)) * (VH - 2 * PAD);
  const line = (vals) => pts.map((p, i) => `${X(p[0]).toFixed(1)},${Y(vals[i]).toFixed(1)}`).join(" ");
  const svg = s("svg", { viewBox: `0 0 ${VW} ${VH}`, preserveAspectRatio: "none" });
  if (band && band.length) {
    const up = band.map(([x, m, sd]) => `${X(x).toFixed(1)},${Y(m + sd).toFixed(1)}`);
    const down = band.slice().reverse().map(([x, m, sd]) => `${X(x).toFixed(1)},${Y(m - sd).toFixed(1)}`);
    const poly = s("polygon", { class: "mdnb-band", points: [...up, ...down].join(" ") });
    poly.style.fill = "#4e79a7";
    svg.append(poly);
  }
  const raw = s("polyline", { class: w > 0 ? "mdnb-raw" : "mdnb-line", points: line(ys) });
  raw.style.stroke = "#4e79a7";
  svg.append(raw);
  if (w > 0) {
    const sm = s("polyline", { class: "mdnb-line", points: line(ema(ys, w)) });
    sm.style.stroke = "#4e79a7";
    svg.append(sm);
  }
  if (pts.length === 1) {
    const c = s("circle", { cx: X(xs[0]), cy: Y(ys[0]), r: 3 });
    c.style.fill = "#4e79a7";
    svg.append(c);
  }
  const last = ys[ys.length - 1];
  return h("div", { class: "mdnb-chart", "data-name": name },
    h("div", { class: "mdnb-chart-title" }, h("b", { text: name }), h("span", { text: `last ${fmt(last, 4)}` })),
    svg,
    h("div", { class: "mdnb-axis", text: `step ${x0}–${x1} · ${fmt(lo, 3)} … ${fmt(hi, 3)}` }));
}

function render({ model, el }) {
  const t0 = performance.now();
  el.classList.add("mdnb", "mdnb-metrics");
  isolateKeys(el);
  const slider = h("input", { type: "range", min: "0", max: "0.99", step: "0.01", "aria-label": "smoothing" });
  const sval = h("span", { class: "mdnb-status" });
  const status = h("span", { class: "mdnb-status" });
  const charts = h("div", { class: "mdnb-charts" });
  slider.value = model.get("smoothing");
  slider.addEventListener("input", () => { model.set("smoothing", +slider.value); model.save_changes(); });
  el.replaceChildren(h("div", { class: "mdnb-toolbar" }, h("span", { text: "smoothing" }), slider, sval, status), charts);

  function draw() {
    const series = model.get("series") || {};
    const w = model.get("smoothing");
    if (+slider.value !== w) slider.value = w;
    sval.textContent = w.toFixed(2);
    status.textContent = model.get("status");
    const std = series.reward_std ? new Map(series.reward_std.map(([x, v]) => [x, v])) : null;
    const out = [];
    for (const name of model.get("order") || Object.keys(series)) {
      const pts = series[name];
      if (!pts || !pts.length || name === "reward_std") continue;
      const band = name === "reward_mean" && std ? pts.filter(([x]) => std.has(x)).map(([x, m]) => [x, m, std.get(x)]) : null;
      out.push(chart(name, pts, w, band));
    }
    charts.replaceChildren(...(out.length ? out : [h("div", { class: "mdnb-hint", text: "no train steps or metrics yet" })]));
  }
  model.on("change:series", draw);
  model.on("change:smoothing", draw);
  model.on("change:status", draw);
  draw();
  markPainted(el, t0, null);
  return () => { model.off("change:series", draw); model.off("change:smoothing", draw); model.off("change:status", draw); };
}

export default { render };
