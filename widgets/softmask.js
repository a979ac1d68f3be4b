// SoftMaskViewer: an image and the model's class probabilities, drawn in the browser so that the
// view, opacity, class toggles, temperature and the hover read-out keep working while the kernel
// is busy. Data: `image` (PNG/JPEG bytes), `probs` (uint8 bytes, C x H x W, probability * 255).
//
// Views (`view`):
//   soft        each pixel is the probability-weighted mix of the class colours at temperature T
//   classes     the most likely class (argmax) in its colour
//   outline     only the borders between argmax regions
//   confidence  the largest probability, as a heatmap with a colour bar
//   entropy     -sum p log p / log C (0 = sure, 1 = every class equally likely), as a heatmap
//   class       one class's probability (`view_class`), as a heatmap
// Temperature: softmax(z / T) is proportional to p ** (1 / T), so it works on probabilities too.

const VIEWS = [
  ["soft", "soft mix (probability-weighted)"],
  ["classes", "most likely class"],
  ["outline", "outlines"],
  ["confidence", "confidence (max probability)"],
  ["entropy", "uncertainty (entropy)"],
  ["class", "one class's probability"],
];
const HEAT = { confidence: true, entropy: true, class: true };
const RAMP = [[48, 18, 59], [65, 105, 225], [35, 170, 140], [170, 220, 50], [250, 235, 40]];

function element(tag, className) {
  const node = document.createElement(tag);
  node.className = className;
  return node;
}

function ramp(t) {
  const p = Math.min(0.9999, Math.max(0, t)) * (RAMP.length - 1);
  const i = Math.floor(p), f = p - i;
  return [0, 1, 2].map((k) => RAMP[i][k] * (1 - f) + RAMP[i + 1][k] * f);
}

function hexToRgb(hex) {
  const v = parseInt(String(hex || "#888888").slice(1), 16);
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
}

function bytesOf(value) {
  if (!value) return new Uint8Array(0);
  if (value instanceof DataView) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  if (value.buffer) return new Uint8Array(value.buffer, value.byteOffset || 0, value.byteLength);
  return new Uint8Array(value);
}

function labelled(text, control) {
  const label = element("label", "segnb-control");
  label.append(text, control);
  return label;
}

function render({ model, el }) {
  const root = element("div", "segnb-view segnb-softmask");
  const canvas = element("canvas", "segnb-softmask-canvas");
  const readout = element("div", "segnb-readout segnb-softmask-readout");
  readout.textContent = "hover the image to read class probabilities";
  const controls = element("div", "segnb-row");

  const view = element("select", "segnb-view-select");
  VIEWS.forEach(([value, text]) => view.add(new Option(text, value)));
  const viewClass = element("select", "segnb-view-class");
  const colours = element("select", "segnb-palette-select");
  colours.add(new Option("contrast (colour-blind safe)", "contrast"));
  colours.add(new Option("the dataset's own", "dataset"));
  const opacity = document.createElement("input");
  Object.assign(opacity, { type: "range", min: 0, max: 1, step: 0.05 });
  opacity.className = "segnb-opacity";
  const temperature = document.createElement("input");
  Object.assign(temperature, { type: "range", min: 0.25, max: 4, step: 0.05 });
  temperature.className = "segnb-temperature";
  const tLabel = element("span", "segnb-temperature-value");
  const classControl = labelled("class ", viewClass);
  const colourControl = labelled("colours ", colours);
  controls.append(labelled("show ", view), classControl, colourControl, labelled("opacity ", opacity),
                  labelled("temperature ", temperature), tLabel);
  const toggles = element("div", "segnb-row segnb-class-toggles");
  const bar = element("div", "segnb-colourbar");
  const barTitle = element("div", "segnb-colourbar-title");
  const barCanvas = element("canvas", "segnb-colourbar-ramp");
  barCanvas.width = 256;
  barCanvas.height = 1;
  const barTicks = element("div", "segnb-colourbar-ticks");
  barTicks.innerHTML = "<span>0</span><span>0.5</span><span>1</span>";
  bar.append(barTitle, barCanvas, barTicks);
  const picture = element("div", "segnb-softmask-picture");
  picture.append(canvas, bar);
  root.append(controls, toggles, picture, readout);
  el.appendChild(root);

  const barCtx = barCanvas.getContext("2d");
  const barFrame = barCtx.createImageData(256, 1);
  for (let i = 0; i < 256; i++) {
    const [r, g, b] = ramp(i / 255);
    barFrame.data.set([r, g, b, 255], i * 4);
  }
  barCtx.putImageData(barFrame, 0, 0);

  const ctx = canvas.getContext("2d");
  const photo = new Image();
  let photoUrl = null;
  let probs = new Uint8Array(0);

  function dims() {
    const [h, w, c] = model.get("shape");
    return { h, w, c };
  }

  function palette() {
    const own = model.get("dataset_palette");
    return model.get("palette_source") === "dataset" && own.length ? own : model.get("palette");
  }

  function loadPhoto() {
    const bytes = bytesOf(model.get("image"));
    if (photoUrl) URL.revokeObjectURL(photoUrl);
    if (!bytes.length) { photoUrl = null; draw(); return; }
    photoUrl = URL.createObjectURL(new Blob([bytes], { type: model.get("image_format") }));
    photo.onload = draw;
    photo.src = photoUrl;
  }

  function buildToggles() {
    toggles.innerHTML = "";
    const names = model.get("class_names");
    const colourList = palette();
    names.forEach((name, i) => {
      const label = element("label", "segnb-class-toggle");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.dataset.index = String(i);
      box.checked = model.get("visible")[i] !== false;
      box.addEventListener("change", () => {
        const visible = names.map((_, j) => (j === i ? box.checked : model.get("visible")[j] !== false));
        model.set("visible", visible);  // a new list: never mutate a synced list in place
        model.save_changes();
      });
      const swatch = element("span", "segnb-swatch");
      swatch.style.background = colourList[i];
      label.append(box, swatch, name);
      toggles.appendChild(label);
    });
    viewClass.innerHTML = "";
    names.forEach((name, i) => viewClass.add(new Option(name, String(i))));
    viewClass.value = String(model.get("view_class"));
  }

  function lookup() {
    // (max(v, 0.5) / 255) ** (1 / T) for every byte value: one table instead of a pow per pixel.
    const t = model.get("temperature");
    const table = new Float32Array(256);
    for (let v = 0; v < 256; v++) table[v] = Math.pow(Math.max(v, 0.5) / 255, 1 / t);
    return table;
  }

  function syncControls() {
    const mode = model.get("view");
    view.value = mode;
    classControl.style.display = mode === "class" ? "" : "none";
    colourControl.style.display = HEAT[mode] ? "none" : "";
    toggles.style.display = HEAT[mode] ? "none" : "";
    bar.style.display = HEAT[mode] ? "" : "none";
    const names = model.get("class_names");
    barTitle.textContent = mode === "confidence" ? "max probability"
      : mode === "entropy" ? "entropy / log C (0 sure, 1 unsure)"
        : `P(${names[model.get("view_class")] || "class"})`;
    colours.value = model.get("palette_source");
    opacity.value = model.get("opacity");
    temperature.value = model.get("temperature");
    tLabel.textContent = `T = ${Number(model.get("temperature")).toFixed(2)}`;
  }

  function draw() {
    const { h, w, c } = dims();
    if (!h || !w) {
      canvas.width = canvas.height = 0;
      return;
    }
    canvas.width = w;
    canvas.height = h;
    // Small images are drawn large (pixelated): at least 320 px wide, times the presentation scale,
    // and never taller than the room the page leaves (`max_height`, in CSS pixels, 0 = no limit).
    let width = Math.max(320, w) * model.get("display_scale");
    const maxHeight = model.get("max_height");
    if (maxHeight > 0) width = Math.min(width, (maxHeight * w) / h);
    canvas.style.width = `${Math.round(width)}px`;
    bar.style.width = `${Math.round(width)}px`;
    ctx.clearRect(0, 0, w, h);
    if (photoUrl && photo.complete && photo.naturalWidth) ctx.drawImage(photo, 0, 0, w, h);
    if (probs.length !== h * w * c) return;
    const frame = ctx.getImageData(0, 0, w, h);
    const px = frame.data;
    const alpha = model.get("opacity");
    const visible = model.get("visible");
    const rgb = palette().map(hexToRgb);
    const mode = model.get("view");
    const plane = h * w;
    const table = lookup();
    const weights = new Float32Array(c);
    const argmax = mode === "outline" ? new Int16Array(plane) : null;
    const chosen = Math.min(c - 1, model.get("view_class"));
    const logC = Math.log(Math.max(2, c));
    for (let i = 0; i < plane; i++) {
      let total = 0, best = 0, bestValue = -1;
      for (let k = 0; k < c; k++) {
        const v = table[probs[k * plane + i]];
        weights[k] = v;
        total += v;
        if (v > bestValue) { bestValue = v; best = k; }
      }
      const o = i * 4;
      let r, g, b, a = alpha;
      if (mode === "soft") {
        r = g = b = 0;
        let shown = 0;
        for (let k = 0; k < c; k++) {
          if (visible[k] === false) continue;
          const p = weights[k] / total;
          r += p * rgb[k][0]; g += p * rgb[k][1]; b += p * rgb[k][2];
          shown += p;
        }
        if (shown <= 0) continue;
        r /= shown; g /= shown; b /= shown;
        a = alpha * shown;
      } else if (mode === "classes" || mode === "outline") {
        if (argmax) { argmax[i] = best; continue; }
        if (visible[best] === false) continue;
        [r, g, b] = rgb[best];
      } else {
        let value;
        if (mode === "confidence") value = bestValue / total;
        else if (mode === "class") value = weights[chosen] / total;
        else {
          let entropy = 0;
          for (let k = 0; k < c; k++) {
            const p = weights[k] / total;
            if (p > 0) entropy -= p * Math.log(p);
          }
          value = entropy / logC;
        }
        [r, g, b] = ramp(value);
      }
      px[o] = px[o] * (1 - a) + r * a;
      px[o + 1] = px[o + 1] * (1 - a) + g * a;
      px[o + 2] = px[o + 2] * (1 - a) + b * a;
    }
    if (argmax) {
      // A pixel is on a border when a 4-neighbour has another class; drawn opaque, in its colour.
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          const i = y * w + x, k = argmax[i];
          if (visible[k] === false) continue;
          const edge = (x > 0 && argmax[i - 1] !== k) || (x < w - 1 && argmax[i + 1] !== k)
            || (y > 0 && argmax[i - w] !== k) || (y < h - 1 && argmax[i + w] !== k);
          if (!edge) continue;
          px.set([rgb[k][0], rgb[k][1], rgb[k][2]], i * 4);
        }
      }
    }
    ctx.putImageData(frame, 0, 0);
    canvas.dataset.drawn = String(Number(canvas.dataset.drawn || 0) + 1);
    canvas.dataset.view = mode;
  }

  function pixelProbabilities(x, y) {
    const { h, w, c } = dims();
    const table = lookup();
    const values = [];
    let total = 0;
    for (let k = 0; k < c; k++) {
      const p = table[probs[k * h * w + y * w + x]];
      values.push(p);
      total += p;
    }
    return values.map((v) => v / total);
  }

  canvas.addEventListener("mousemove", (event) => {
    const { h, w, c } = dims();
    if (probs.length !== h * w * c) return;
    const rect = canvas.getBoundingClientRect();
    const x = Math.min(w - 1, Math.max(0, Math.floor(((event.clientX - rect.left) / rect.width) * w)));
    const y = Math.min(h - 1, Math.max(0, Math.floor(((event.clientY - rect.top) / rect.height) * h)));
    const names = model.get("class_names");
    const p = pixelProbabilities(x, y);
    const order = p.map((v, i) => [v, i]).sort((a, b) => b[0] - a[0]).slice(0, 4);
    readout.textContent = `(${x}, ${y})  ` + order.map(([v, i]) => `${names[i]} ${(100 * v).toFixed(1)}%`).join("  ");
  });

  function send(name, value) {
    model.set(name, value);
    model.save_changes();
  }
  view.addEventListener("change", () => send("view", view.value));
  viewClass.addEventListener("change", () => send("view_class", Number(viewClass.value)));
  colours.addEventListener("change", () => send("palette_source", colours.value));
  opacity.addEventListener("input", () => send("opacity", Number(opacity.value)));
  temperature.addEventListener("input", () => send("temperature", Number(temperature.value)));

  const redraw = () => { syncControls(); draw(); };
  model.on("change:image", loadPhoto);
  model.on("change:probs", () => {
    probs = bytesOf(model.get("probs"));
    if (!probs.length) readout.textContent = "hover the image to read class probabilities";
    draw();
  });
  model.on("change:visible", () => { buildToggles(); draw(); });
  model.on("change:class_names", () => { buildToggles(); syncControls(); });
  model.on("change:palette", () => { buildToggles(); draw(); });
  model.on("change:dataset_palette", () => { buildToggles(); draw(); });
  model.on("change:palette_source", () => { buildToggles(); redraw(); });
  for (const name of ["opacity", "temperature", "view", "view_class"]) model.on(`change:${name}`, redraw);
  model.on("change:display_scale", draw);
  model.on("change:max_height", draw);

  probs = bytesOf(model.get("probs"));
  buildToggles();
  syncControls();
  loadPhoto();
  return () => { if (photoUrl) URL.revokeObjectURL(photoUrl); };
}

export default { render };
