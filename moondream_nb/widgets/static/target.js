// target.js: TargetEditor (core.js + canvas.js precede it). Draw the right points/boxes, or
// type the answer (and reasoning) for query. Extra traits: skill, prompt, has_image, answer,
// reasoning, reasoning_text.

function textField(model, key, label, rows) {
  const area = h("textarea", { rows: String(rows), "data-field": key, "aria-label": label });
  area.value = model.get(key);
  area.addEventListener("input", () => { model.set(key, area.value); model.save_changes(); });
  const sync = () => { if (area.value !== model.get(key)) area.value = model.get(key); };
  model.on(`change:${key}`, sync);
  return [h("label", { class: "mdnb-field" }, h("span", { text: label }), area), () => model.off(`change:${key}`, sync)];
}

// Labeling-session keys (trait nav): the kernel decides what "next" means, so the keys only send
// a message. In a text field only Ctrl/Cmd-Enter counts (plain Enter and letters are typing).
// Capture phase: the canvas inside isolates its keys (stopPropagation), so bubbling never gets here.
const NAV_HINT = "Enter: save & next · PageDown: next · PageUp: previous · x: skip (Ctrl/Cmd-Enter in a text field)";
function navKeys(model, el) {
  el.addEventListener("keydown", (e) => {
    const tag = e.target.tagName, typing = tag === "TEXTAREA" || tag === "INPUT", mod = e.ctrlKey || e.metaKey;
    let action = null;
    if (e.key === "Enter" && tag !== "BUTTON" && (!typing || mod)) action = "next";
    else if (e.key === "PageDown") action = "next";
    else if (e.key === "PageUp") action = "previous";
    else if (e.key === "x" && !typing && !mod) action = "skip";
    if (!action) return;
    e.preventDefault();
    // The edit state travels with the message: ipywidgets holds state updates back while the
    // kernel is busy but sends custom messages at once, so a quick Enter could overtake the last edit.
    model.send({ type: "nav", action, layers: model.get("layers"), answer: model.get("answer"),
                 reasoning_text: model.get("reasoning_text") });
  }, true);
  return h("div", { class: "mdnb-hint mdnb-nav-hint", text: NAV_HINT });
}

function render({ model, el }) {
  const t0 = performance.now();
  el.classList.add("mdnb", "mdnb-target");
  isolateKeys(el);
  const parts = [h("div", { class: "mdnb-prompt", text: model.get("prompt") })];
  const cleanups = [];
  let canvasEl = null;
  if (model.get("has_image")) {
    canvasEl = h("div");
    cleanups.push(renderCanvas(model, canvasEl));
    parts.push(canvasEl);
  }
  if (model.get("skill") === "query") {
    const [answer, offA] = textField(model, "answer", "Answer", 2);
    parts.push(answer);
    cleanups.push(offA);
    if (model.get("reasoning")) {
      const [reasoning, offR] = textField(model, "reasoning_text", "Reasoning", 3);
      parts.push(reasoning);
      cleanups.push(offR);
    }
  } else {
    const hint = model.get("skill") === "point"
      ? "click to add a point (or, in box mode, drag boxes: a target is points or boxes) · drag to move · Del removes · Ctrl/Cmd-Z undo"
      : "drag to draw a box (also over another) · corners resize · click selects, Tab cycles · arrows nudge, Shift-arrows resize (Alt ×10) · Alt-drag or select mode moves · Del removes · Ctrl/Cmd-Z undo";
    parts.push(h("div", { class: "mdnb-hint", text: hint }));
  }
  if (model.get("nav")) parts.push(navKeys(model, el));
  el.replaceChildren(...parts);
  if (!canvasEl) markPainted(el, t0, null); // with an image, renderCanvas marks its own paint
  return () => cleanups.forEach((f) => f && f());
}

export default { render };
