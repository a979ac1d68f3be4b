// SoftMaskViewer: image + prediction overlay; opacity, class toggles, temperature and the hover
// read-out are computed here, in the browser, so they keep working while the kernel is busy.
// Data: `image` (PNG/JPEG bytes), `probs` (uint8 bytes, C x H x W, probability * 255).

function hexToRgb(hex) {
  const v = parseInt(hex.slice(1), 16);
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
}

function bytesOf(value) {
  if (!value) return new Uint8Array(0);
  if (value instanceof DataView) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  if (value.buffer) return new Uint8Array(value.buffer, value.byteOffset || 0, value.byteLength);
  return new Uint8Array(value);
}

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "segnb-view segnb-softmask";
  const canvas = document.createElement("canvas");
  canvas.className = "segnb-softmask-canvas";
  const readout = document.createElement("div");
  readout.className = "segnb-readout segnb-softmask-readout";
  readout.textContent = "hover the image to read class probabilities";
  const controls = document.createElement("div");
  controls.className = "segnb-row";

  const opacity = document.createElement("input");
  Object.assign(opacity, { type: "range", min: 0, max: 1, step: 0.05 });
  opacity.className = "segnb-opacity";
  const temperature = document.createElement("input");
  Object.assign(temperature, { type: "range", min: 0.25, max: 4, step: 0.05 });
  temperature.className = "segnb-temperature";
  const tLabel = document.createElement("span");
  const toggles = document.createElement("div");
  toggles.className = "segnb-row segnb-class-toggles";
  controls.append("opacity", opacity, "temperature", temperature, tLabel);
  root.append(controls, toggles, canvas, readout);
  el.appendChild(root);

  const ctx = canvas.getContext("2d");
  const photo = new Image();
  let photoUrl = null;
  let probs = new Uint8Array(0);

  function dims() {
    const [h, w, c] = model.get("shape");
    return { h, w, c };
  }

  function loadPhoto() {
    const bytes = bytesOf(model.get("image"));
    if (photoUrl) URL.revokeObjectURL(photoUrl);
    photoUrl = URL.createObjectURL(new Blob([bytes], { type: model.get("image_format") }));
    photo.onload = draw;
    photo.src = photoUrl;
  }

  function buildToggles() {
    toggles.innerHTML = "";
    const names = model.get("class_names");
    const palette = model.get("palette");
    names.forEach((name, i) => {
      const label = document.createElement("label");
      label.className = "segnb-class-toggle";
      const box = document.createElement("input");
      box.type = "checkbox";
      box.dataset.index = String(i);
      box.checked = model.get("visible")[i] !== false;
      box.addEventListener("change", () => {
        const visible = names.map((_, j) => (j === i ? box.checked : model.get("visible")[j] !== false));
        model.set("visible", visible);  // a new list: never mutate a synced list in place
        model.save_changes();
      });
      const swatch = document.createElement("span");
      swatch.className = "segnb-swatch";
      swatch.style.background = palette[i];
      label.append(box, swatch, name);
      toggles.appendChild(label);
    });
  }

  function draw() {
    const { h, w, c } = dims();
    if (!h || !w) return;
    canvas.width = w;
    canvas.height = h;
    // Small images are drawn large (pixelated): at least 320 px wide, times the presentation scale.
    canvas.style.width = `${Math.max(320, w) * model.get("display_scale")}px`;
    if (photo.complete && photo.naturalWidth) ctx.drawImage(photo, 0, 0, w, h);
    if (probs.length !== h * w * c) return;
    const frame = ctx.getImageData(0, 0, w, h);
    const px = frame.data;
    const alpha = model.get("opacity");
    const visible = model.get("visible");
    const colours = model.get("palette").map(hexToRgb);
    const plane = h * w;
    for (let i = 0; i < plane; i++) {
      let best = -1, bestValue = -1;
      for (let k = 0; k < c; k++) {
        const v = probs[k * plane + i];
        if (v > bestValue) { bestValue = v; best = k; }
      }
      if (best < 0 || visible[best] === false) continue;
      const [r, g, b] = colours[best];
      const o = i * 4;
      px[o] = px[o] * (1 - alpha) + r * alpha;
      px[o + 1] = px[o + 1] * (1 - alpha) + g * alpha;
      px[o + 2] = px[o + 2] * (1 - alpha) + b * alpha;
    }
    ctx.putImageData(frame, 0, 0);
    canvas.dataset.drawn = String(Number(canvas.dataset.drawn || 0) + 1);
  }

  function pixelProbabilities(x, y) {
    const { h, w, c } = dims();
    const t = model.get("temperature");
    const values = [];
    let total = 0;
    for (let k = 0; k < c; k++) {
      // softmax(z / T) is proportional to p ** (1 / T): temperature works on probabilities too.
      const p = Math.pow(Math.max(probs[k * h * w + y * w + x], 0.5) / 255, 1 / t);
      values.push(p);
      total += p;
    }
    return values.map((v) => v / total);
  }

  canvas.addEventListener("mousemove", (event) => {
    const { h, w } = dims();
    const rect = canvas.getBoundingClientRect();
    const x = Math.min(w - 1, Math.max(0, Math.floor(((event.clientX - rect.left) / rect.width) * w)));
    const y = Math.min(h - 1, Math.max(0, Math.floor(((event.clientY - rect.top) / rect.height) * h)));
    const names = model.get("class_names");
    const p = pixelProbabilities(x, y);
    const order = p.map((v, i) => [v, i]).sort((a, b) => b[0] - a[0]).slice(0, 4);
    readout.textContent = `(${x}, ${y})  ` + order.map(([v, i]) => `${names[i]} ${(100 * v).toFixed(1)}%`).join("  ");
  });

  function syncControls() {
    opacity.value = model.get("opacity");
    temperature.value = model.get("temperature");
    tLabel.textContent = `T = ${Number(model.get("temperature")).toFixed(2)}`;
  }
  opacity.addEventListener("input", () => { model.set("opacity", Number(opacity.value)); model.save_changes(); });
  temperature.addEventListener("input", () => {
    model.set("temperature", Number(temperature.value));
    model.save_changes();
  });

  model.on("change:image", loadPhoto);
  model.on("change:probs", () => { probs = bytesOf(model.get("probs")); draw(); });
  model.on("change:opacity", () => { syncControls(); draw(); });
  model.on("change:visible", () => { buildToggles(); draw(); });
  model.on("change:temperature", syncControls);
  model.on("change:class_names", buildToggles);
  model.on("change:display_scale", draw);

  probs = bytesOf(model.get("probs"));
  buildToggles();
  syncControls();
  loadPhoto();
  return () => { if (photoUrl) URL.revokeObjectURL(photoUrl); };
}

export default { render };
