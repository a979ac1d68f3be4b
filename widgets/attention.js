// AttentionViewer: layer and head selectors, rollout toggle, a layer x head thumbnail grid, and
// click-a-patch to see where it attends. The selected layer's attention arrives once (float32,
// heads x T x T); clicks are answered here, in the browser.

function element(tag, className) {
  const node = document.createElement(tag);
  node.className = className;
  return node;
}

function floats(value) {
  if (!value) return new Float32Array(0);
  const view = value instanceof DataView ? value : new DataView(value.buffer || value);
  return new Float32Array(view.buffer.slice(view.byteOffset, view.byteOffset + view.byteLength));
}

function bytesOf(value) {
  if (!value) return new Uint8Array(0);
  if (value instanceof DataView) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  return new Uint8Array(value.buffer || value);
}

const RAMP = [[48, 18, 59], [65, 105, 225], [35, 170, 140], [170, 220, 50], [250, 235, 40]];
function ramp(t) {
  const p = Math.min(0.9999, Math.max(0, t)) * (RAMP.length - 1);
  const i = Math.floor(p), f = p - i;
  return RAMP[i].map((v, k) => v * (1 - f) + RAMP[i + 1][k] * f);
}

function render({ model, el }) {
  const root = element("div", "segnb-view segnb-attention");
  const controls = element("div", "segnb-row");
  const layer = element("select", "segnb-layer");
  const head = element("select", "segnb-head");
  const rollout = document.createElement("input");
  rollout.type = "checkbox";
  rollout.className = "segnb-rollout";
  controls.append("layer ", layer, " head ", head, rollout, " rollout (all layers combined)");
  const row = element("div", "segnb-row");
  const canvas = element("canvas", "segnb-attention-canvas");
  const thumbs = element("img", "segnb-attention-thumbs");
  thumbs.title = "layers (rows) x heads (columns): click one to select it";
  // The thumbnails with their axes: a label per head above, a label per layer on the left.
  const thumbBox = element("div", "segnb-thumb-grid");
  const thumbTitle = element("div", "segnb-thumb-title");
  thumbTitle.textContent = "every layer x head (click one)";
  const headLabels = element("div", "segnb-thumb-heads");
  const layerLabels = element("div", "segnb-thumb-layers");
  const thumbBody = element("div", "segnb-thumb-body");
  thumbBody.append(layerLabels, thumbs);
  thumbBox.append(thumbTitle, headLabels, thumbBody);
  row.append(canvas, thumbBox);
  const readout = element("div", "segnb-readout segnb-attention-readout");
  readout.textContent = "click a patch to see where it attends";
  root.append(controls, row, readout);
  el.appendChild(root);

  const ctx = canvas.getContext("2d");
  const photo = new Image();
  let attn = new Float32Array(0), rolled = new Float32Array(0);
  const urls = {};

  function setImage(img, key, format) {
    if (urls[key]) URL.revokeObjectURL(urls[key]);
    urls[key] = URL.createObjectURL(new Blob([bytesOf(model.get(key))], { type: format }));
    img.src = urls[key];
  }

  function fillSelectors() {
    layer.innerHTML = "";
    for (let i = 0; i < model.get("layers"); i++) layer.add(new Option(String(i), String(i)));
    head.innerHTML = "";
    head.add(new Option("mean", "-1"));
    for (let i = 0; i < model.get("heads"); i++) head.add(new Option(String(i), String(i)));
    layer.value = String(model.get("layer"));
    // 48-px tiles and a 1-px gap per cell (AttentionViewer._thumbnails), times the presentation scale.
    const cell = 49 * model.get("display_scale");
    const heads = model.get("heads"), layers = model.get("layers");
    thumbs.style.width = `${cell * heads}px`;
    headLabels.innerHTML = "";
    headLabels.style.marginLeft = "4.5em";
    for (let k = 0; k < heads; k++) {
      const span = document.createElement("span");
      span.style.width = `${cell}px`;
      span.textContent = `head ${k}`;
      headLabels.appendChild(span);
    }
    layerLabels.innerHTML = "";
    for (let l = 0; l < layers; l++) {
      const span = document.createElement("span");
      span.style.height = `${cell}px`;
      span.style.lineHeight = `${cell}px`;
      span.textContent = `layer ${l}`;
      layerLabels.appendChild(span);
    }
    head.value = String(model.get("head"));
    rollout.checked = model.get("rollout");
  }

  function currentMap() {
    const [gh, gw] = model.get("grid");
    const prefix = model.get("prefix");
    const tokens = prefix + gh * gw;
    const query = model.get("query");
    const source = query.length === 2 ? prefix + query[0] * gw + query[1] : 0;
    const map = new Float32Array(gh * gw);
    if (model.get("rollout")) {
      if (rolled.length !== tokens * tokens) return null;
      for (let j = 0; j < gh * gw; j++) map[j] = rolled[source * tokens + prefix + j];
      return map;
    }
    const heads = model.get("heads");
    if (attn.length !== heads * tokens * tokens) return null;
    const h = model.get("head");
    const list = h < 0 ? [...Array(heads).keys()] : [h];
    for (const k of list) {
      const base = k * tokens * tokens + source * tokens + prefix;
      for (let j = 0; j < gh * gw; j++) map[j] += attn[base + j] / list.length;
    }
    return map;
  }

  function draw() {
    const [gh, gw] = model.get("grid");
    const [h, w] = model.get("image_shape");
    if (!h || !w || !gh) return;
    canvas.width = w;
    canvas.height = h;
    // Small images are drawn large (pixelated): at least 320 px wide, times the presentation scale.
    canvas.style.width = `${Math.max(320, w) * model.get("display_scale")}px`;
    if (photo.complete && photo.naturalWidth) ctx.drawImage(photo, 0, 0, w, h);
    const map = currentMap();
    if (!map) return;
    let lo = Infinity, hi = -Infinity;
    for (const v of map) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    const cellW = w / gw, cellH = h / gh;
    ctx.globalAlpha = model.get("opacity");
    for (let r = 0; r < gh; r++) {
      for (let c = 0; c < gw; c++) {
        const [R, G, B] = ramp(hi > lo ? (map[r * gw + c] - lo) / (hi - lo) : 0);
        ctx.fillStyle = `rgb(${R | 0},${G | 0},${B | 0})`;
        ctx.fillRect(c * cellW, r * cellH, Math.ceil(cellW), Math.ceil(cellH));
      }
    }
    ctx.globalAlpha = 1;
    const query = model.get("query");
    if (query.length === 2) {
      ctx.strokeStyle = "#ff2d55";
      ctx.lineWidth = Math.max(2, w / 160);
      ctx.strokeRect(query[1] * cellW, query[0] * cellH, cellW, cellH);
    }
    canvas.dataset.signature = String(map.reduce((a, v, i) => a + v * ((i % 7) + 1), 0).toFixed(6));
    const what = query.length === 2 ? `patch (${query[0]}, ${query[1]})` : "the CLS token";
    readout.textContent = `${model.get("rollout") ? "rollout" : `layer ${model.get("layer")}, head ${model.get("head") < 0 ? "mean" : model.get("head")}`}: where ${what} attends`;
  }

  canvas.addEventListener("click", (event) => {
    const [gh, gw] = model.get("grid");
    const rect = canvas.getBoundingClientRect();
    const c = Math.min(gw - 1, Math.floor(((event.clientX - rect.left) / rect.width) * gw));
    const r = Math.min(gh - 1, Math.floor(((event.clientY - rect.top) / rect.height) * gh));
    model.set("query", [r, c]);
    model.save_changes();
    draw();
  });
  thumbs.addEventListener("click", (event) => {
    const rect = thumbs.getBoundingClientRect();
    const l = Math.floor(((event.clientY - rect.top) / rect.height) * model.get("layers"));
    const k = Math.floor(((event.clientX - rect.left) / rect.width) * model.get("heads"));
    model.set("layer", l);
    model.set("head", k);
    model.set("rollout", false);
    model.save_changes();
  });
  layer.addEventListener("change", () => { model.set("layer", Number(layer.value)); model.save_changes(); });
  head.addEventListener("change", () => { model.set("head", Number(head.value)); model.save_changes(); draw(); });
  rollout.addEventListener("change", () => { model.set("rollout", rollout.checked); model.save_changes(); draw(); });

  model.on("change:attn", () => { attn = floats(model.get("attn")); draw(); });
  model.on("change:rollout_attn", () => { rolled = floats(model.get("rollout_attn")); draw(); });
  model.on("change:image", () => setImage(photo, "image", "image/jpeg"));
  model.on("change:thumbs", () => setImage(thumbs, "thumbs", "image/png"));
  for (const name of ["layer", "head", "rollout", "layers", "heads"]) model.on(`change:${name}`, () => { fillSelectors(); draw(); });
  for (const name of ["query", "opacity", "grid"]) model.on(`change:${name}`, draw);
  model.on("change:display_scale", () => { fillSelectors(); draw(); });
  photo.onload = draw;

  attn = floats(model.get("attn"));
  rolled = floats(model.get("rollout_attn"));
  fillSelectors();
  setImage(photo, "image", "image/jpeg");
  setImage(thumbs, "thumbs", "image/png");
  return () => Object.values(urls).forEach((u) => URL.revokeObjectURL(u));
}

export default { render };
