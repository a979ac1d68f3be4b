// ScribbleCanvas: paint foreground/background strokes and place positive/negative clicks on an image.
// Drawing happens here, in the browser: strokes and clicks render at once, even while the kernel is
// busy. They travel to Python as compact lists (synced traits), never as pictures:
//   strokes: [{label: 1|2, size: brush radius px, points: [x0, y0, x1, y1, ...], t: order}]
//   clicks:  [[x, y, 1|0, t], ...]      (image pixel coordinates; 1 = positive)
// Python answers with `mask`, a uint8 plane (H x W, 0/1), drawn as a coloured overlay.

const COLOURS = { 1: "#2ecc40", 2: "#ff4136" };  // foreground green, background red
const MASK_RGB = [255, 0, 200];  // magenta: unlike any class colour of the built-in data or a grey EM slice
const EDGE_RGB = [255, 230, 0];  // the mask's outline, opaque, readable on a projector

function element(tag, className) {
  const node = document.createElement(tag);
  node.className = className;
  return node;
}

function bytesOf(value) {
  if (!value) return new Uint8Array(0);
  if (value instanceof DataView) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  if (value.buffer) return new Uint8Array(value.buffer, value.byteOffset || 0, value.byteLength);
  return new Uint8Array(value);
}

function button(text, cls, title) {
  const b = document.createElement("button");
  b.textContent = text;
  b.className = `segnb-scribble-button ${cls}`;
  b.title = title;
  return b;
}

function render({ model, el }) {
  const root = element("div", "segnb-view segnb-scribble");
  const tools = element("div", "segnb-row segnb-scribble-tools");
  const toolButtons = {
    foreground: button("✎ foreground", "segnb-tool-foreground", "paint strokes on the object"),
    background: button("✎ background", "segnb-tool-background", "paint strokes on what is not the object"),
    positive: button("⊕ click", "segnb-tool-positive", "click on the object (right-click: negative)"),
    negative: button("⊖ click", "segnb-tool-negative", "click on what is not the object"),
  };
  const brush = document.createElement("input");
  Object.assign(brush, { type: "range", min: 1, max: 20, step: 1 });
  brush.className = "segnb-brush";
  const brushLabel = element("span", "segnb-brush-label");
  const undo = button("↶ undo", "segnb-undo", "remove the last stroke or click");
  const clear = button("✕ clear", "segnb-clear", "remove every stroke and click");
  const opacity = document.createElement("input");
  Object.assign(opacity, { type: "range", min: 0, max: 1, step: 0.05 });
  opacity.className = "segnb-opacity";
  tools.append(...Object.values(toolButtons), "brush", brush, brushLabel, undo, clear, "mask opacity", opacity);

  const canvas = element("canvas", "segnb-scribble-canvas");
  const status = element("div", "segnb-readout segnb-scribble-status");
  root.append(tools, canvas, status);
  el.appendChild(root);

  const ctx = canvas.getContext("2d");
  const photo = new Image();
  let photoUrl = null;
  let maskCanvas = null;  // the mask, coloured, at image size
  let current = null;  // the stroke being drawn
  let waiting = false;  // sent an edit, no answer yet
  let drawnCount = 0;

  const dims = () => { const [h, w] = model.get("shape"); return { h, w }; };
  const scale = () => { const { w } = dims(); return w ? canvas.width / w : 1; };
  const nextT = () => {
    const ts = model.get("strokes").map((s) => s.t || 0).concat(model.get("clicks").map((c) => c[3] || 0));
    return ts.length ? Math.max(...ts) + 1 : 1;
  };

  function loadPhoto() {
    const bytes = bytesOf(model.get("image"));
    if (photoUrl) URL.revokeObjectURL(photoUrl);
    if (!bytes.length) { draw(); return; }
    photoUrl = URL.createObjectURL(new Blob([bytes], { type: model.get("image_format") }));
    photo.onload = () => { resize(); draw(); };
    photo.src = photoUrl;
  }

  function resize() {
    const { h, w } = dims();
    if (!h || !w) return;
    // Drawn at least 384 px wide (small images are enlarged, pixelated), times the presentation scale.
    const k = Math.max(1, Math.round((Math.max(384, w) / w) * model.get("display_scale")));
    canvas.width = w * k;
    canvas.height = h * k;
    // In the Studio's presentation mode (.segnb-presentation above us) the CSS scale grows.
    canvas.style.width = `calc(${w * k}px * var(--segnb-scale))`;
  }

  function loadMask() {
    const { h, w } = dims();
    const mask = bytesOf(model.get("mask"));
    if (!h || !w || mask.length !== h * w) {
      maskCanvas = null;
      canvas.dataset.maskPixels = "0";
      draw();
      return;
    }
    maskCanvas = document.createElement("canvas");
    maskCanvas.width = w;
    maskCanvas.height = h;
    const mctx = maskCanvas.getContext("2d");
    const frame = mctx.createImageData(w, h);
    let count = 0;
    for (let i = 0; i < h * w; i++) {
      if (!mask[i]) continue;
      const x = i % w, y = (i - x) / w;
      const edge = x === 0 || y === 0 || x === w - 1 || y === h - 1 || !mask[i - 1] || !mask[i + 1] ||
        !mask[i - w] || !mask[i + w];
      frame.data.set(edge ? [...EDGE_RGB, 255] : [...MASK_RGB, 150], i * 4);
      count += 1;
    }
    mctx.putImageData(frame, 0, 0);
    canvas.dataset.maskPixels = String(count);  // for tests and curious users
    draw();
  }

  function strokePath(stroke) {
    const k = scale();
    const p = stroke.points;
    ctx.strokeStyle = COLOURS[stroke.label] || "#ffdc00";
    ctx.fillStyle = ctx.strokeStyle;
    ctx.lineWidth = Math.max(1, 2 * stroke.size * k);
    ctx.lineCap = ctx.lineJoin = "round";
    ctx.globalAlpha = 0.85;
    if (p.length === 2) {
      ctx.beginPath();
      ctx.arc((p[0] + 0.5) * k, (p[1] + 0.5) * k, ctx.lineWidth / 2, 0, 2 * Math.PI);
      ctx.fill();
    } else {
      ctx.beginPath();
      ctx.moveTo((p[0] + 0.5) * k, (p[1] + 0.5) * k);
      for (let i = 2; i < p.length; i += 2) ctx.lineTo((p[i] + 0.5) * k, (p[i + 1] + 0.5) * k);
      ctx.stroke();
    }
    ctx.globalAlpha = 1;
  }

  function draw() {
    const { h, w } = dims();
    if (!h || !w) return;
    if (canvas.width < w) resize();
    ctx.imageSmoothingEnabled = false;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (photo.complete && photo.naturalWidth) ctx.drawImage(photo, 0, 0, canvas.width, canvas.height);
    if (maskCanvas && model.get("opacity") > 0) {
      ctx.globalAlpha = Math.min(1, 0.3 + model.get("opacity"));
      ctx.drawImage(maskCanvas, 0, 0, canvas.width, canvas.height);
      ctx.globalAlpha = 1;
    }
    for (const stroke of model.get("strokes")) strokePath(stroke);
    if (current) strokePath(current);
    const k = scale();
    const r = Math.max(5, 0.8 * k) * model.get("display_scale");
    for (const [x, y, positive] of model.get("clicks")) {
      ctx.beginPath();
      ctx.arc((x + 0.5) * k, (y + 0.5) * k, r, 0, 2 * Math.PI);
      ctx.fillStyle = positive ? COLOURS[1] : COLOURS[2];
      ctx.fill();
      ctx.lineWidth = 2;
      ctx.strokeStyle = "#ffffff";
      ctx.stroke();
    }
    drawnCount += 1;
    canvas.dataset.drawn = String(drawnCount);
    canvas.dataset.strokes = String(model.get("strokes").length + (current ? 1 : 0));
    canvas.dataset.clicks = String(model.get("clicks").length);
  }

  function showStatus() {
    status.textContent = (waiting ? "updating… " : "") + model.get("status");
    status.classList.toggle("segnb-waiting", waiting);
  }

  function send(key, value) {
    model.set(key, value);  // a new list: never mutate a synced list in place
    model.save_changes();
    waiting = true;
    showStatus();
    draw();
  }

  function pixel(event) {
    const rect = canvas.getBoundingClientRect();
    const { h, w } = dims();
    const x = Math.min(w - 1, Math.max(0, Math.floor(((event.clientX - rect.left) / rect.width) * w)));
    const y = Math.min(h - 1, Math.max(0, Math.floor(((event.clientY - rect.top) / rect.height) * h)));
    return [x, y];
  }

  canvas.addEventListener("contextmenu", (event) => event.preventDefault());
  canvas.addEventListener("pointerdown", (event) => {
    const { h } = dims();
    if (!h) return;
    const tool = model.get("tool");
    const [x, y] = pixel(event);
    if (tool === "positive" || tool === "negative") {
      const positive = tool === "positive" && event.button !== 2 ? 1 : 0;
      send("clicks", [...model.get("clicks"), [x, y, positive, nextT()]]);
      return;
    }
    if (event.button !== 0) return;
    canvas.setPointerCapture(event.pointerId);
    current = { label: tool === "background" ? 2 : 1, size: model.get("brush"), points: [x, y], t: nextT() };
    draw();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!current) return;
    const [x, y] = pixel(event);
    const p = current.points;
    if (p[p.length - 2] !== x || p[p.length - 1] !== y) {
      p.push(x, y);
      draw();
    }
  });
  const finish = () => {
    if (!current) return;
    const stroke = current;
    current = null;
    send("strokes", [...model.get("strokes"), stroke]);
  };
  canvas.addEventListener("pointerup", finish);
  canvas.addEventListener("pointercancel", finish);

  undo.addEventListener("click", () => {
    const strokes = model.get("strokes");
    const clicks = model.get("clicks");
    const lastStroke = strokes.length ? strokes[strokes.length - 1].t || 0 : -1;
    const lastClick = clicks.length ? clicks[clicks.length - 1][3] || 0 : -1;
    if (lastStroke < 0 && lastClick < 0) return;
    if (lastStroke >= lastClick) send("strokes", strokes.slice(0, -1));
    else send("clicks", clicks.slice(0, -1));
  });
  clear.addEventListener("click", () => {
    model.set("clicks", []);
    send("strokes", []);
  });
  for (const [name, b] of Object.entries(toolButtons)) {
    b.addEventListener("click", () => { model.set("tool", name); model.save_changes(); syncControls(); });
  }
  brush.addEventListener("input", () => { model.set("brush", Number(brush.value)); model.save_changes(); syncControls(); });
  opacity.addEventListener("input", () => { model.set("opacity", Number(opacity.value)); model.save_changes(); draw(); });

  function syncControls() {
    for (const [name, b] of Object.entries(toolButtons)) b.classList.toggle("segnb-active", model.get("tool") === name);
    brush.value = model.get("brush");
    brushLabel.textContent = `${model.get("brush")} px`;
    opacity.value = model.get("opacity");
    root.classList.toggle("segnb-presentation", model.get("display_scale") > 1);
  }

  model.on("change:image", loadPhoto);
  model.on("change:shape", () => { resize(); loadMask(); });
  model.on("change:mask", loadMask);
  model.on("change:answered", () => { waiting = false; showStatus(); });
  model.on("change:status", showStatus);
  model.on("change:strokes", draw);
  model.on("change:clicks", draw);
  model.on("change:opacity", () => { syncControls(); draw(); });
  model.on("change:tool", syncControls);
  model.on("change:brush", syncControls);
  model.on("change:display_scale", () => { syncControls(); resize(); draw(); });

  syncControls();
  showStatus();
  loadPhoto();
  loadMask();
  return () => { if (photoUrl) URL.revokeObjectURL(photoUrl); };
}

export default { render };
