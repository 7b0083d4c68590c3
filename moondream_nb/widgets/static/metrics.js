// metrics.js: MetricsPanel (core.js precedes it). Traits: series ({name: [[step, value], ...]}),
// order (names, display order), smoothing (EMA weight 0-0.99), status.

function ema(values, w) {
  // TensorBoard-style EMA with bias correction, so the first points are not dragged to 0.
  let acc = 0, n = 0;
  return values.map((v) => { n += 1; acc = w * acc + (1 - w) * v; return w > 0 ? acc / (1 - Math.pow(w, n)) : v; });
}


function niceTicks(lo, hi, n = 4) {
  const raw = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((k) => k * mag).find((s) => s >= raw) || 10 * mag;
  const out = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  let digits = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  while (digits < 6 && Math.abs(step * 10 ** digits - Math.round(step * 10 ** digits)) > 1e-6) digits += 1;  // 0.25 → 2
  return { ticks: out, digits };
}

function tickText(v, digits) {
  return Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(1) : v.toFixed(Math.min(digits, 4));
}

// ranges (plots.METRIC_RANGES): a metric whose values all sit inside its range gets its band and
// axis clipped to it (a reward in [0, 1] gets no negative band).
function chart(name, pts, w, band, ranges) {
  const VW = 300, VH = 120, PAD = 6;
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const [rlo, rhi] = (ranges || {})[name] || [null, null];
  const inside = ys.every((y) => (rlo === null || y >= rlo) && (rhi === null || y <= rhi));
  const clip = (y) => (inside && rlo !== null && y < rlo ? rlo : inside && rhi !== null && y > rhi ? rhi : y);
  band = band ? band.map(([x, m, sd]) => [x, clip(m - sd), clip(m + sd)]) : null;
  let lo = Math.min(...ys), hi = Math.max(...ys);
  if (band) for (const [, a, b] of band) { lo = Math.min(lo, a); hi = Math.max(hi, b); }
  if (hi - lo < 1e-12) { const d = Math.abs(hi) > 1e-9 ? Math.abs(hi) * 0.1 : 0.5; hi += d; lo -= d; }
  if (inside && rlo !== null) lo = Math.max(lo, rlo);
  if (inside && rhi !== null) hi = Math.min(hi, rhi);
  const { ticks, digits } = niceTicks(lo, hi);
  lo = Math.min(lo, ticks[0]); hi = Math.max(hi, ticks[ticks.length - 1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs);
  const X = (x) => PAD + (x1 > x0 ? (x - x0) / (x1 - x0) : 0.5) * (VW - 2 * PAD);
  const Y = (y) => VH - PAD - ((y - lo) / (hi - lo)) * (VH - 2 * PAD);
  const line = (vals) => pts.map((p, i) => `${X(p[0]).toFixed(1)},${Y(vals[i]).toFixed(1)}`).join(" ");
  const svg = s("svg", { viewBox: `0 0 ${VW} ${VH}`, preserveAspectRatio: "none" });
  // y ticks: grid lines in the plot, labels as HTML beside it (SVG text would stretch with the plot)
  const yaxis = h("div", { class: "mdnb-yaxis" });
  for (const v of ticks) {
    svg.append(s("line", { class: "mdnb-grid-line", x1: 0, x2: VW, y1: Y(v), y2: Y(v) }));
    const label = h("span", { class: "mdnb-ytick", text: tickText(v, digits) });
    label.style.top = `${(100 * Y(v)) / VH}%`;
    yaxis.append(label);
  }
  if (band && band.length) {
    const up = band.map(([x, , b]) => `${X(x).toFixed(1)},${Y(b).toFixed(1)}`);
    const down = band.slice().reverse().map(([x, a]) => `${X(x).toFixed(1)},${Y(a).toFixed(1)}`);
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
  const plot = h("div", { class: "mdnb-plot" }, svg);
  if (pts.length === 1) {  // one value: a marked point that says what it is
    const dot = h("span", { class: "mdnb-dot" });
    dot.style.left = `${(100 * X(xs[0])) / VW}%`;
    dot.style.top = `${(100 * Y(ys[0])) / VH}%`;
    const label = h("span", { class: "mdnb-dot-label", text: `step ${xs[0]}: ${fmt(ys[0], 4)}` });
    label.style.left = dot.style.left;
    label.style.top = dot.style.top;
    plot.append(dot, label);
  }
  // hover: a guide at the nearest step and its value in the title
  const guide = h("span", { class: "mdnb-guide" });
  guide.hidden = true;
  plot.append(guide);
  const last = ys[ys.length - 1];
  const readout = h("span", { class: "mdnb-readout", text: `last ${fmt(last, 4)} (step ${xs[xs.length - 1]})` });
  plot.addEventListener("pointermove", (e) => {
    const r = plot.getBoundingClientRect();
    const vx = ((e.clientX - r.left) / Math.max(1, r.width)) * VW;
    let best = 0;
    for (let i = 1; i < pts.length; i++) if (Math.abs(X(xs[i]) - vx) < Math.abs(X(xs[best]) - vx)) best = i;
    guide.hidden = false;
    guide.style.left = `${(100 * X(xs[best])) / VW}%`;
    readout.textContent = `step ${xs[best]}: ${fmt(ys[best], 4)}`;
  });
  plot.addEventListener("pointerleave", () => {
    guide.hidden = true;
    readout.textContent = `last ${fmt(last, 4)} (step ${xs[xs.length - 1]})`;
  });
  return h("div", { class: "mdnb-chart", "data-name": name },
    h("div", { class: "mdnb-chart-title" }, h("b", { text: name }), readout),
    h("div", { class: "mdnb-chart-body" }, yaxis, plot),
    x1 > x0 ? h("div", { class: "mdnb-axis" }, h("span", { text: `step ${x0}` }), h("span", { text: `${x1}` }))
      : h("div", { class: "mdnb-axis mdnb-axis-one" }, h("span", { text: `step ${x0}` })));
}

// [step, value] into points sorted by step; a later value for the same step replaces it.
function upsertPoint(points, p) {
  let i = points.length;
  while (i > 0 && points[i - 1][0] > p[0]) i--;
  if (i > 0 && points[i - 1][0] === p[0]) points[i - 1] = p;
  else points.splice(i, 0, p);
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
      out.push(chart(name, pts, w, band, model.get("ranges")));
    }
    charts.replaceChildren(...(out.length ? out : [h("div", { class: "mdnb-hint", text: "no train steps or metrics yet" })]));
  }
  // New points arrive as a message (only what is new); merging is idempotent, so every view of the
  // model may apply the same message to the shared series.
  const onMsg = (msg) => {
    if (!msg || msg.type !== "points") return;
    const series = model.get("series") || {};
    for (const [name, pts] of Object.entries(msg.points)) {
      const cur = series[name] || (series[name] = []);
      for (const p of pts) upsertPoint(cur, p);
    }
    draw();
  };
  model.on("change:series", draw);
  model.on("change:smoothing", draw);
  model.on("change:status", draw);
  model.on("change:order", draw);
  model.on("msg:custom", onMsg);
  draw();
  markPainted(el, t0, null);
  return () => {
    model.off("change:series", draw); model.off("change:smoothing", draw); model.off("change:status", draw);
    model.off("change:order", draw); model.off("msg:custom", onMsg);
  };
}

export default { render };
