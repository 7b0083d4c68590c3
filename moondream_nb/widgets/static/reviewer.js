// reviewer.js: RolloutReviewer (core.js precedes it). One request's rollouts over its image,
// a colour each, a legend with answers and a reward control per rollout.
// Model traits: _image, image_size, has_image, skill, prompt, _rollouts ({p|b: coords, answer,
// reasoning}), colors, rewards, reward_mode ("binary"|"scale"|"rank"), selected, status.

const GOOD = 0.5; // binary mode: reward >= GOOD counts as good

function rankOrder(rewards) {
  return rewards.map((r, i) => [r, i]).sort((a, b) => b[0] - a[0] || a[1] - b[1]).map((x) => x[1]);
}
function rankRewards(order) {
  const n = order.length, out = new Array(n);
  order.forEach((idx, pos) => { out[idx] = n > 1 ? Math.round((1 - pos / (n - 1)) * 1e6) / 1e6 : 1; });
  return out;
}

function render({ model, el }) {
  const t0 = performance.now();
  el.classList.add("mdnb", "mdnb-reviewer");
  isolateKeys(el);
  el.tabIndex = 0;
  const rolls = model.get("_rollouts") || [];
  const colors = model.get("colors") || [];
  const n = rolls.length;
  const mode = model.get("reward_mode");
  let armed = false; // a digit picked a rollout; the next 0/1 scores it

  // Query answers that are the same text (and reasoning) form one legend row: one score applies
  // to every rollout in it (rewards stay one per rollout, in rollout order). leader[i] is the
  // first rollout of i's row; members[leader] lists the row.
  const norm = (t) => String(t ?? "").trim().replace(/\s+/g, " ").toLowerCase();
  const leader = new Array(n), members = {};
  const grouped = model.get("skill") === "query" && mode !== "rank";
  const seen = new Map();
  rolls.forEach((roll, i) => {
    const key = grouped ? `${norm(roll.answer)}\u0000${norm(roll.reasoning)}` : `#${i}`;
    if (!seen.has(key)) { seen.set(key, i); members[i] = []; }
    leader[i] = seen.get(key);
    members[leader[i]].push(i);
  });
  const leaders = [...seen.values()];
  const rowOf = (i) => members[leader[i]];

  // A reward the person sets marks its rollouts scored (unscored ones show "–", not "✗ 0.00").
  const setRewards = (rewards, which = null) => {
    const sc = (model.get("scored") || []).slice();
    rewards.forEach((_, i) => { if (which === null || which.includes(i)) sc[i] = true; });
    model.set("scored", sc);
    model.set("rewards", rewards);
    model.save_changes();
  };
  const setReward = (i, v) => {
    const r = (model.get("rewards") || []).slice();
    for (const j of rowOf(i)) r[j] = Math.round(clamp01(v) * 1e6) / 1e6;
    setRewards(r, rowOf(i));
  };
  const toggle = (i) => { const r = model.get("rewards")[i]; setReward(i, r >= GOOD ? 0 : 1); };
  const select = (i) => { model.set("selected", i < 0 ? i : leader[i]); model.save_changes(); };
  // The rewards travel with the message: ipywidgets holds state updates back while the kernel is
  // busy, but sends custom messages at once, so a quick Enter could otherwise overtake them.
  const submit = () => { model.save_changes(); model.send({ type: "submit", rewards: model.get("rewards") }); };
  const lookOnly = () => !model.get("submittable");

  // --- image + overlay: built once; reward changes only flip classes ---------------------
  let stage = null;
  const groups = [];
  if (model.get("has_image")) {
    stage = createStage(model);
    const { svg, W, H } = stage;
    // One markup string parsed once (core.js marksMarkup: halos, rims). Colour sits on the <g>
    // (stroke for boxes, fill for points) and is inherited.
    const parts = [truthMarkup(model.get("truth"), W, H)];
    rolls.forEach((roll, i) => {
      const color = String(colors[i]).replace(/[^#a-zA-Z0-9(),.% ]/g, "");
      parts.push(`<g class="mdnb-roll" data-r="${i}" stroke="${color}" fill="${color}">`, marksMarkup(roll.p, roll.b, W, H), "</g>");
    });
    parts.push(coincidentMarkup(rolls, W, H));
    svg.insertAdjacentHTML("beforeend", parts.join(""));
    groups.push(...svg.querySelectorAll("g.mdnb-roll"));
    stage.rescale();
    svg.addEventListener("click", (e) => {
      const g = e.target.closest && e.target.closest("g.mdnb-roll");
      if (!g) return;
      const i = +g.dataset.r;
      armed = false;
      if (mode === "binary") toggle(i);
      select(i);
    });
    // Hovering a mark (or a "×k" badge) lights its legend row(s) and fades the other rollouts.
    svg.addEventListener("pointerover", (e) => {
      const t = e.target.closest && (e.target.closest("g.mdnb-roll") || e.target.closest("g.mdnb-badge"));
      hot(t ? (t.dataset.rs ? t.dataset.rs.split(",").map(Number) : [+t.dataset.r]) : null);
    });
    svg.addEventListener("pointerleave", () => hot(null));
  }

  function hot(rs) {
    const on = rs ? new Set(rs) : null;
    groups.forEach((g, j) => { g.classList.toggle("mdnb-dim", !!on && !on.has(j)); g.classList.toggle("mdnb-hot", !!on && on.has(j)); });
    items.forEach((it, j) => it.classList.toggle("mdnb-hot", !!on && on.has(j)));
  }

  // --- legend -------------------------------------------------------------------------
  const items = [];
  const values = [];
  const sliders = [];
  const legend = h("div", { class: "mdnb-legend" });
  rolls.forEach((roll, i) => {
    const np = (roll.p || []).length, nb = (roll.b || []).length;
    let text = roll.answer ?? "";
    if (!text && model.get("skill") === "point") text = `${np} point${np === 1 ? "" : "s"}`;
    if (!text && model.get("skill") === "detect") text = `${nb} box${nb === 1 ? "" : "es"}`;
    const answer = h("span", { class: "mdnb-answer", text });
    if (roll.reasoning) answer.append(h("span", { class: "mdnb-reasoning", text: roll.reasoning }));
    const value = h("span", { class: "mdnb-reward" });
    const swatch = h("span", { class: "mdnb-swatch" });
    swatch.style.background = colors[i];
    const row = rowOf(i);
    if (row.length > 1) answer.prepend(h("span", { class: "mdnb-count-badge", text: `×${row.length}`,
      title: `rollouts ${row.map((j) => "#" + (j + 1)).join(" ")} gave this answer; one score applies to all` }), " ");
    const item = h("div", { class: "mdnb-item", "data-r": i, "data-rs": row.join(","), title: `rollout ${i + 1}` },
      swatch, h("span", { class: "mdnb-idx", text: `#${i + 1}` }), answer, value);
    if (leader[i] !== i) item.hidden = true;  // shown by its row's first rollout
    if (mode === "scale") {
      const slider = h("input", { type: "range", min: "0", max: "1", step: "0.05", "aria-label": `reward of rollout ${i + 1}` });
      slider.addEventListener("input", () => setReward(i, +slider.value));
      slider.addEventListener("click", (e) => e.stopPropagation());
      item.append(slider);
      sliders.push(slider);
    }
    item.addEventListener("click", () => { armed = false; if (mode === "binary") toggle(i); select(i); });
    item.addEventListener("mouseenter", () => hot(rowOf(i)));
    item.addEventListener("mouseleave", () => hot(null));
    if (mode === "rank") enableRankDrag(item, i);
    items.push(item);
    values.push(value);
  });

  // Rank mode: drag a legend row to a new place; rewards become evenly spaced 1 ... 0.
  function enableRankDrag(item, i) {
    item.addEventListener("pointerdown", (e) => {
      if (e.button !== 0) return;
      const y0 = e.clientY;
      let target = null;
      const move = (ev) => {
        if (Math.abs(ev.clientY - y0) < 4 && target === null) return;
        item.classList.add("mdnb-dragging");
        const rows = [...legend.querySelectorAll(".mdnb-item")];
        target = rows.length;
        for (let k = 0; k < rows.length; k++) {
          const r = rows[k].getBoundingClientRect();
          if (ev.clientY < r.top + r.height / 2) { target = k; break; }
        }
        rows.forEach((row, k) => row.classList.toggle("mdnb-drop-before", k === target));
      };
      const up = () => {
        window.removeEventListener("pointermove", move);
        window.removeEventListener("pointerup", up);
        item.classList.remove("mdnb-dragging");
        legend.querySelectorAll(".mdnb-drop-before").forEach((r) => r.classList.remove("mdnb-drop-before"));
        if (target === null) return;
        const order = rankOrder(model.get("rewards")).filter((j) => j !== i);
        const from = rankOrder(model.get("rewards")).indexOf(i);
        order.splice(target > from ? target - 1 : target, 0, i);
        setRewards(rankRewards(order));
        select(i);
      };
      window.addEventListener("pointermove", move);
      window.addEventListener("pointerup", up);
    });
  }

  function moveInRank(i, delta) {
    const order = rankOrder(model.get("rewards"));
    const pos = order.indexOf(i), to = Math.min(n - 1, Math.max(0, pos + delta));
    if (to === pos) return;
    order.splice(pos, 1);
    order.splice(to, 0, i);
    setRewards(rankRewards(order));
  }

  // --- state -> DOM -------------------------------------------------------------------
  function update() {
    const rewards = model.get("rewards") || [];
    const sel = model.get("selected");
    for (let i = 0; i < n; i++) {
      const scored = (model.get("scored") || [])[i] !== false;
      const r = rewards[i], bad = mode === "binary" && scored ? !(r >= GOOD) : false;
      items[i].classList.toggle("mdnb-bad", bad);
      items[i].classList.toggle("mdnb-sel", leader[i] === sel);
      values[i].textContent = !scored ? "–" : mode === "binary" ? `${r >= GOOD ? "✓" : "✗"} ${fmt(r)}` : fmt(r);
      values[i].title = scored ? "" : "unscored: counts as 0 when submitted";
      items[i].classList.toggle("mdnb-unscored", !scored);
      if (sliders[i] && +sliders[i].value !== r) sliders[i].value = r;
      if (groups[i]) {
        groups[i].classList.toggle("mdnb-bad", bad);
        groups[i].classList.toggle("mdnb-focus", sel >= 0 && leader[i] === sel);
      }
    }
    if (mode === "rank") legend.replaceChildren(...rankOrder(rewards).map((i) => items[i]), ...extras);
    else if (!legend.childElementCount) legend.replaceChildren(...items, ...extras);
    body.classList.toggle("mdnb-has-sel", sel >= 0);
    body.classList.toggle("mdnb-truth-off", !model.get("show_truth"));
    if (truthBtn) truthBtn.classList.toggle("mdnb-active", model.get("show_truth"));
    statusEl.textContent = model.get("status") || (lookOnly() ? "for looking: nothing is trained from this panel (attach on_submit, or use a ReviewSession)" : "");
    submitBtn.hidden = lookOnly();
    hint.textContent = lookOnly() ? hints[mode].replace(/ · Enter submits$/, "") : hints[mode];
  }

  // --- header, buttons, keys ------------------------------------------------------------
  const hints = {
    binary: "click a rollout (image or list) to toggle good/bad · keys: 1–9 pick, then 1 good / 0 bad · Space toggles · ←/→ move · Enter submits",
    scale: "slider per rollout · keys: 1–9 pick, 0/1 set, ↑/↓ ±0.1 · Enter submits",
    rank: "drag rows to rank (top = best) · keys: 1–9 pick, ↑/↓ move in rank · Enter submits",
  };
  const hasTruth = !!stage && !!model.get("truth") && ((model.get("truth").p || []).length + (model.get("truth").b || []).length) > 0;
  const statusEl = h("span", { class: "mdnb-status" });
  const truthBtn = hasTruth ? h("button", { class: "mdnb-btn", "data-act": "truth", title: "ground truth (g)", text: "truth",
    onclick: () => toggleTruth() }) : null;
  const toggleTruth = () => { model.set("show_truth", !model.get("show_truth")); model.save_changes(); };
  // legend rows after the rollouts: what the white dashed marks are
  const extras = hasTruth ? [h("div", { class: "mdnb-item mdnb-legend-truth", title: "ground truth (g toggles)" },
    h("span", { class: "mdnb-swatch mdnb-truth-swatch" }), h("span", { class: "mdnb-idx", text: "GT" }),
    h("span", { class: "mdnb-answer", text: "ground truth (g toggles)" }), h("span", {}))] : [];
  const submitBtn = h("button", { class: "mdnb-btn mdnb-primary", "data-act": "submit", text: "Submit ⏎", onclick: () => submit() });
  const hint = h("div", { class: "mdnb-hint", text: hints[mode] });
  const toolbar = h("div", { class: "mdnb-toolbar" },
    submitBtn,
    mode === "binary" ? h("button", { class: "mdnb-btn", "data-act": "all-good", text: "all good", onclick: () => setRewards(new Array(n).fill(1)) }) : null,
    mode === "binary" ? h("button", { class: "mdnb-btn", "data-act": "all-bad", text: "all bad", onclick: () => setRewards(new Array(n).fill(0)) }) : null,
    stage ? h("button", { class: "mdnb-btn", "data-act": "fit", title: "Fit (f)", text: "⤢", onclick: () => stage.fit() }) : null,
    truthBtn,
    statusEl);
  const header = h("div", { class: "mdnb-prompt", text: model.get("prompt") });
  const body = h("div", { class: "mdnb-review" }, stage ? stage.root : null, legend);
  el.replaceChildren(header, toolbar, body, hint);

  el.addEventListener("keydown", (e) => {
    if (e.target.tagName === "INPUT" && e.key !== "Enter") return;
    const k = e.key, sel = model.get("selected");
    let handled = true;
    if (k === "Enter") submit();
    else if (armed && sel >= 0 && (k === "0" || k === "1")) { setReward(sel, +k); armed = false; }
    else if (k >= "1" && k <= "9" && +k <= leaders.length) { select(leaders[+k - 1]); armed = true; }
    else if (k === " " && sel >= 0 && mode === "binary") toggle(sel);
    else if (k === "ArrowRight" || k === "j") { select(leaders[Math.min(leaders.length - 1, leaders.indexOf(sel) + 1)]); armed = false; }
    else if (k === "ArrowLeft" || k === "k") { select(leaders[Math.max(0, leaders.indexOf(sel) - 1)]); armed = false; }
    else if ((k === "ArrowUp" || k === "ArrowDown") && sel >= 0 && mode === "rank") moveInRank(sel, k === "ArrowUp" ? -1 : 1);
    else if ((k === "ArrowUp" || k === "ArrowDown") && sel >= 0) setReward(sel, model.get("rewards")[sel] + (k === "ArrowUp" ? 0.1 : -0.1));
    else if (k === "Escape") { select(-1); armed = false; }
    else if (k === "f" && stage) stage.fit();
    else if (k === "g" && hasTruth) toggleTruth();
    else if ((k === "+" || k === "=") && stage) stage.zoomAt(1.5);
    else if (k === "-" && stage) stage.zoomAt(1 / 1.5);
    else handled = false;
    if (handled) e.preventDefault();
  });
  el.addEventListener("pointerdown", (e) => { if (e.target.tagName !== "INPUT" && e.target.tagName !== "BUTTON") el.focus({ preventScroll: true }); });

  model.on("change:rewards", update);
  model.on("change:selected", update);
  model.on("change:status", update);
  model.on("change:submittable", update);
  model.on("change:show_truth", update);
  model.on("change:scored", update);
  update();
  markPainted(el, t0, stage);
  return () => {
    model.off("change:rewards", update);
    model.off("change:selected", update);
    model.off("change:status", update);
    model.off("change:submittable", update);
    model.off("change:show_truth", update);
    model.off("change:scored", update);
    if (stage) stage.destroy();
  };
}

export default { render };
