"""One user session with the Studio, the same in JupyterLab and in Voila.

``StudioSession(page, root, prefix).run_all()`` clicks through every tab as a
user would and asserts what the page shows: pictures drawn, curves growing, a
Stop that stops. Each step names itself in its assertion messages; each tab is
screenshot to ``tests/e2e/artifacts/<prefix>-<tab>.png``.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from playwright.sync_api import Locator, Page, expect

from segnb.data.shapes import SHAPES_CLASSES

TABS = ("Dataset", "Model", "Train", "Runs", "Inspect", "Upsampling", "IoU", "Classical", "Instances",
        "Interactive")
PANEL = {"Dataset": ".segnb-dataset-picker", "Model": ".segnb-model-builder", "Train": ".segnb-train-panel",
         "Runs": ".segnb-runs-panel",
         "Inspect": ".segnb-inspect-panel", "Upsampling": ".segnb-upsampling-lab", "IoU": ".segnb-iou-report",
         "Classical": ".segnb-classical-lab", "Instances": ".segnb-instance-panel",
         "Interactive": ".segnb-interactive-panel"}
ARCH, ENCODER = "setr-pup", "test_vit"  # a ViT model, so that the Inspect tab shows attention maps
IMAGES = 100  # dataset size picked on the slider (80 training images: epochs of a few seconds)

JS_PROGRESS = """el => parseFloat(el.querySelector('.progress-bar').style.width || '0')"""
JS_TRACE_POINTS = """el => { const gd = el.querySelector('.segnb-curves .js-plotly-plot');
    const t = gd && gd.data ? gd.data.find(t => t.name === 'validation mIoU') : null;
    return t ? t.x.length : -1; }"""
JS_AXES = """el => { const gd = el.querySelector('.segnb-curves .js-plotly-plot');
    const axis = name => { const t = gd.data.find(t => t.name === name); return t ? (t.yaxis || 'y') : null; };
    return {loss: axis('validation loss'), miou: axis('validation mIoU'), log: gd.layout.yaxis.type,
            steps: (gd.data.find(t => t.name === 'training loss (smoothed)') || {x: []}).x.length}; }"""
JS_CLASS_MARKERS = """el => { const gd = el.querySelector('.segnb-class-curves .js-plotly-plot');
    return gd && gd.data ? gd.data.map(t => t.mode) : []; }"""
JS_PIXELS = """c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let h = 0; for (let i = 0; i < d.length; i++) h = (h * 31 + d[i]) >>> 0; return h; }"""
JS_IMAGE_HASH = """img => { if (!img.complete || !img.naturalWidth) return null;
    const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
    const x = c.getContext('2d'); x.drawImage(img, 0, 0); const d = x.getImageData(0, 0, c.width, c.height).data;
    let h = 0; for (let i = 0; i < d.length; i++) h = (h * 31 + d[i]) >>> 0; return [c.width, c.height, h]; }"""
# The smallest computed font size of any visible element with text of its own, with an example.
JS_SMALLEST_TEXT = """root => { let small = [1e9, ''];
    for (const el of root.querySelectorAll('*')) {
        const own = Array.from(el.childNodes).some(n => n.nodeType === 3 && n.textContent.trim());
        if (!own) continue;
        const r = el.getBoundingClientRect();
        if (!r.width || !r.height) continue;
        const s = getComputedStyle(el);
        if (s.visibility === 'hidden' || s.display === 'none') continue;
        const size = parseFloat(s.fontSize);
        if (size < small[0]) small = [size, el.tagName + ': ' + el.textContent.trim().slice(0, 40)];
    }
    return small; }"""
MAIN_VIEW = {"Dataset": ".segnb-preview", "Model": ".segnb-stages", "Train": ".segnb-curves", "Runs": ".segnb-runs-curves",
             "Inspect": ".segnb-softmask-canvas", "Upsampling": ".segnb-upsampling-output",
             "IoU": ".segnb-iou-bars", "Classical": ".segnb-classical-pictures",
             "Instances": ".segnb-instances-predicted", "Interactive": ".segnb-scribble-canvas"}
JS_DRAWN = """el => Number(el.dataset.drawn || 0)"""


def until(condition, timeout: float, what: str, interval: float = 0.2):
    """Poll ``condition()`` until it is truthy; fail with ``what`` (and the last value) after ``timeout``."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what} (not within {timeout:.0f} s; last value {value!r})")


class ConsoleErrors(list):
    """Every console error and uncaught page error, except offline fetches of external hosts."""

    OFFLINE = ("net::ERR_NAME_NOT_RESOLVED", "net::ERR_INTERNET_DISCONNECTED", "net::ERR_PROXY_CONNECTION_FAILED")

    def __init__(self, page):
        super().__init__()
        self.ignored: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.append(f"pageerror: {error}"))
        page.on("requestfailed", self._request_failed)

    def _console(self, message):
        if message.type != "error":
            return
        text = message.text
        location = message.location.get("url", "") if message.location else ""
        if self._external(location) and "Failed to load resource" in text:
            self.ignored.append(f"{text} ({location})")
            return
        self.append(f"console.error: {text} ({location})")

    def _request_failed(self, request):
        if self._external(request.url):
            self.ignored.append(f"{request.failure} {request.url}")

    @staticmethod
    def _external(url: str) -> bool:
        return bool(url) and not url.startswith(("http://127.0.0.1", "blob:", "data:", "about:"))


class StudioSession:
    def __init__(self, page: Page, root: Locator, prefix: str, artifacts: Path, console: ConsoleErrors):
        self.page, self.root, self.prefix, self.artifacts, self.console = page, root, prefix, artifacts, console
        self.timings: dict[str, float] = {}

    # -- helpers -------------------------------------------------------------------------------
    def tab(self, name: str) -> Locator:
        self.root.locator(".lm-TabBar-tab", has_text=re.compile(f"^{name}$")).first.click()
        panel = self.root.locator(PANEL[name])
        expect(panel, f"the {name} tab shows its panel").to_be_visible(timeout=60_000)  # made when first opened
        return panel

    def shot(self, name: str) -> None:
        self.root.screenshot(path=str(self.artifacts / f"{self.prefix}-{name.lower()}.png"))

    def no_error_box(self, panel: Locator, step: str) -> None:
        errors = [t for t in panel.locator(".segnb-error").all_inner_texts() if t.strip()]
        assert not errors, f"{step}: the panel shows an error: {errors}"

    @staticmethod
    def set_number(box: Locator, value) -> None:
        """Type into an ipywidgets numeric text box (commits on Enter)."""
        box.fill(str(value))
        box.press("Enter")
        expect(box).to_have_value(str(value))

    # -- the session ---------------------------------------------------------------------------
    def run_all(self) -> dict[str, float]:
        """Every step in order; on a failure the whole page is saved (PNG and HTML) for a person."""
        try:
            for step in (self.every_tab_renders, self.dataset, self.model, self.inspect,
                         self.train_while_inspecting, self.iou, self.upsampling, self.classical,
                         self.instances, self.save_lesson, self.new_model_marks_old_results, self.restore_lesson,
                         self.presentation):
                step()
        except Exception as error:
            self.page.screenshot(path=str(self.artifacts / f"{self.prefix}-failure.png"), full_page=True)
            (self.artifacts / f"{self.prefix}-failure.html").write_text(self.page.content())
            console = "\n".join(self.console) or "none"
            raise AssertionError(f"step {step.__name__} failed: {error}\nJavaScript errors so far: {console}\n"
                                 f"page saved to {self.prefix}-failure.png/.html") from error
        return self.timings

    def every_tab_renders(self) -> None:
        titles = self.root.locator(".lm-TabBar-tab").evaluate_all("els => els.map(e => e.textContent.trim())")
        assert titles == list(TABS), f"the Studio's tabs are {titles}, expected {list(TABS)}"
        for name in TABS:
            self.tab(name)

    def dataset(self) -> None:
        panel = self.tab("Dataset")
        handle = panel.locator(".segnb-size .noUi-handle")
        handle.focus()
        value = panel.locator(".segnb-size .widget-readout")
        while int(value.inner_text()) > IMAGES:
            handle.press("ArrowLeft")
        assert int(value.inner_text()) == IMAGES
        start = time.monotonic()
        panel.locator(".segnb-load").click()
        expect(panel.locator(".segnb-dataset-summary", has_text="classes (void"),
               "the dataset summary appears after Load").to_be_visible(timeout=60_000)
        preview = panel.locator(".segnb-preview")
        until(lambda: preview.evaluate("img => img.complete && img.naturalWidth > 0"), 30,
              "the dataset preview shows an image")
        size = preview.evaluate("img => [img.naturalWidth, img.naturalHeight]")
        assert size[0] >= 3 * 64 and size[1] >= 64, f"the preview is a grid of samples, got {size}"
        bars = panel.locator(".segnb-frequencies g.barlayer path")
        until(lambda: bars.count() == len(SHAPES_CLASSES), 30, "the class-frequency chart draws a bar per class")
        self.timings["load dataset"] = time.monotonic() - start
        self.no_error_box(panel, "Dataset")
        self.shot("Dataset")

    def model(self) -> None:
        panel = self.tab("Model")
        panel.locator(".segnb-arch select").select_option(ARCH)
        encoder = panel.locator(".segnb-encoder input")
        encoder.fill(ENCODER)
        encoder.press("Enter")
        expect(panel.locator(".segnb-compatible"), f"{ARCH} on {ENCODER} is explained as compatible"
               ).to_be_visible(timeout=15_000)
        panel.locator(".segnb-build").click()
        expect(panel.locator(".segnb-stages"), "Build describes the model").to_be_visible(timeout=60_000)
        expect(panel.locator(".widget-html", has_text=ENCODER).first).to_be_visible()
        self.no_error_box(panel, "Model")
        self.shot("Model")

    def inspect(self) -> None:
        panel = self.tab("Inspect")
        panel.locator(".segnb-inspect-show").click()
        canvas = panel.locator(".segnb-softmask-canvas")
        until(lambda: canvas.evaluate(JS_DRAWN) >= 1, 60, "Show draws the soft mask on its canvas")
        attention = panel.locator(".segnb-attention-canvas")
        until(lambda: attention.get_attribute("data-signature"), 60, "Show draws an attention map")
        self.no_error_box(panel, "Inspect")

    def train_while_inspecting(self) -> None:
        panel = self.tab("Train")
        self.set_number(panel.locator(".segnb-epochs input"), 200)  # far more than we wait for: Stop must end it
        start_button, stop_button = panel.locator(".segnb-start"), panel.locator(".segnb-stop")
        progress = panel.locator(".segnb-progress")
        status = panel.locator(".segnb-train-status")
        start_button.click()
        expect(stop_button, "Start enables Stop").to_be_enabled(timeout=30_000)
        until(lambda: progress.evaluate(JS_PROGRESS) > 0, 60, "the progress bar advances after Start")
        first = progress.evaluate(JS_PROGRESS)
        until(lambda: progress.evaluate(JS_PROGRESS) != first, 60, "the progress bar keeps advancing")
        assert re.search(r"images/s", status.inner_text()), f"the status reports speed: {status.inner_text()!r}"
        points = until(lambda: panel.evaluate(JS_TRACE_POINTS) >= 2 and panel.evaluate(JS_TRACE_POINTS), 120,
                       "the loss curve gains a point per epoch")
        until(lambda: panel.locator(".segnb-curves g.scatterlayer path.point").count() >= points,
              20, "the loss curve's points are drawn")
        # Loss and mIoU on different axes (the loss on a log scale), the training loss drawn per step,
        # and after one epoch the per-class IoU chart shows a marker per class (not empty lines).
        axes = panel.evaluate(JS_AXES)
        assert axes["loss"] and axes["miou"] and axes["loss"] != axes["miou"], f"loss and mIoU share an axis: {axes}"
        assert axes["log"] == "log" and axes["steps"] >= 2, axes
        modes = until(lambda: panel.evaluate(JS_CLASS_MARKERS), 20, "the per-class IoU chart is drawn")
        assert len(modes) == len(SHAPES_CLASSES) and all("markers" in m for m in modes), modes
        points = panel.locator(".segnb-class-curves g.scatterlayer path.point")
        until(lambda: points.count() >= len(SHAPES_CLASSES), 20, "the per-class IoU chart draws its markers")
        self.shot("Train")

        # While it trains: the soft-mask controls are front-end only, so they answer at once.
        inspect = self.tab("Inspect")
        assert not start_button.is_enabled(), "training still runs while we inspect"
        canvas = inspect.locator(".segnb-softmask-canvas")
        drawn = canvas.evaluate(JS_DRAWN)
        opacity = inspect.locator("input.segnb-opacity")
        t0 = time.monotonic()
        opacity.fill("0.9")  # a range input: fill sets the value and fires input
        until(lambda: canvas.evaluate(JS_DRAWN) > drawn, 5, "moving the opacity slider redraws the canvas")
        self.timings["opacity redraw while training"] = time.monotonic() - t0
        pixels = canvas.evaluate("c => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data"
                                 ".filter((_, i) => i % 4 === 0)).reduce((a, v) => a + v, 0)")
        drawn = canvas.evaluate(JS_DRAWN)
        toggles = inspect.locator(".segnb-class-toggles input")
        names = [t.strip() for t in inspect.locator(".segnb-class-toggle").all_inner_texts()]
        assert names == list(SHAPES_CLASSES), f"a toggle per class: {names}"
        for i in range(toggles.count()):
            toggles.nth(i).uncheck()
        until(lambda: canvas.evaluate(JS_DRAWN) >= drawn + len(names), 5, "each class toggle redraws the canvas")
        hidden = canvas.evaluate("c => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data"
                                 ".filter((_, i) => i % 4 === 0)).reduce((a, v) => a + v, 0)")
        assert hidden != pixels, "hiding every class changes the pictured pixels"
        for i in range(toggles.count()):
            toggles.nth(i).check()
        # The soft mask is soft: the picture changes with the temperature.
        temperature = inspect.locator("input.segnb-temperature")
        drawn = canvas.evaluate(JS_DRAWN)
        temperature.fill("0.25")
        until(lambda: canvas.evaluate(JS_DRAWN) > drawn, 5, "moving the temperature redraws the canvas")
        cold = canvas.evaluate(JS_PIXELS)
        drawn = canvas.evaluate(JS_DRAWN)
        temperature.fill("4")
        until(lambda: canvas.evaluate(JS_DRAWN) > drawn, 5, "moving the temperature redraws the canvas")
        hot = canvas.evaluate(JS_PIXELS)
        assert cold != hot, "the soft-mask canvas is the same at temperatures 0.25 and 4"
        temperature.fill("1")
        canvas.hover(position={"x": 40, "y": 40})
        readout = inspect.locator(".segnb-softmask-readout")
        expect(readout, "hovering shows class probabilities").to_contain_text("%", timeout=5_000)
        text = readout.inner_text()
        assert re.match(r"\(\d+, \d+\)", text) and len(re.findall(r"\d+\.\d%", text)) >= 2, text
        shares = [float(v) for v in re.findall(r"(\d+\.\d)%", text)]
        assert all(0 <= v <= 100 for v in shares) and shares == sorted(shares, reverse=True), text

        attention = inspect.locator(".segnb-attention-canvas")
        before = attention.get_attribute("data-signature")
        box = attention.bounding_box()
        attention.click(position={"x": box["width"] * 0.8, "y": box["height"] * 0.8})
        until(lambda: attention.get_attribute("data-signature") != before, 5,
              "clicking a patch changes the attention map")
        expect(inspect.locator(".segnb-attention-readout")).to_contain_text("patch (")
        self.shot("Inspect")

        # Stop: the panel says so within seconds, and the progress stands still.
        panel = self.tab("Train")
        assert not start_button.is_enabled(), "training still runs when we press Stop"
        t0 = time.monotonic()
        stop_button.click()
        expect(status, "the panel says training stopped").to_contain_text("stopped by the user", timeout=15_000)
        expect(start_button, "Start is enabled again after Stop").to_be_enabled(timeout=15_000)
        self.timings["stop"] = time.monotonic() - t0
        assert self.timings["stop"] < 10, f"Stop took {self.timings['stop']:.1f} s"
        at_stop = progress.evaluate(JS_PROGRESS)
        time.sleep(2)
        assert progress.evaluate(JS_PROGRESS) == at_stop, "the progress bar moved after Stop"
        assert at_stop < 100, "training ended on its own before Stop (the test must stop it)"
        self.no_error_box(panel, "Train")

    def iou(self) -> None:
        panel = self.tab("IoU")
        panel.locator(".segnb-evaluate").click()
        bars = panel.locator(".segnb-iou-bars g.barlayer path")
        until(lambda: bars.count() == len(SHAPES_CLASSES), 60, "the per-class IoU chart draws a bar per class")
        until(lambda: panel.locator(".segnb-confusion g.hm image").count() == 1, 30,
              "the confusion matrix renders as a heatmap")
        ticks = panel.locator(".segnb-confusion .ytick text").evaluate_all("els => els.map(e => e.textContent)")
        assert sorted(ticks) == sorted(SHAPES_CLASSES), f"the confusion rows are the classes, got {ticks}"
        expect(panel.locator(".segnb-worst-open").first, "the worst images are listed").to_be_visible()
        until(lambda: panel.locator(".segnb-size-iou g.barlayer path").count() >= 2, 60,
              "the IoU-by-object-size chart draws its bins")
        self.no_error_box(panel, "IoU")
        self.shot("IoU")

    def upsampling(self) -> None:
        panel = self.tab("Upsampling")
        cells = panel.locator(".segnb-upsampling-output g.textpoint, .segnb-upsampling-output .hm text")
        values = panel.locator(".segnb-upsampling-output .js-plotly-plot")
        JS_Z = "gd => JSON.stringify(gd.data[0].z)"
        before = until(lambda: values.count() and values.evaluate(JS_Z), 15, "the output is a heatmap")
        assert "output of transposed" in panel.locator(".segnb-upsampling-output").inner_text()
        panel.locator(".segnb-operator select").select_option("nearest")
        until(lambda: values.evaluate(JS_Z) != before, 15, "changing the operator recomputes the output")
        assert cells.count() >= 0
        self.no_error_box(panel, "Upsampling")
        self.shot("Upsampling")

    def classical(self) -> None:
        panel = self.tab("Classical")
        panel.locator(".segnb-classical-run").click()
        pictures = panel.locator(".segnb-classical-pictures")
        until(lambda: pictures.evaluate("img => img.complete && img.naturalWidth > 0"), 60,
              "the classical method draws its segments beside the model and the truth")
        rows = panel.locator(".segnb-classical-scores tr")
        expect(rows, "a score row for the method and one for the model").to_have_count(3)
        captions = panel.locator(".segnb-strip-label").all_inner_texts()
        assert len(captions) == 4 and "superpixels merged into" in captions[1], captions
        self.no_error_box(panel, "Classical")
        self.shot("Classical")

    def instances(self) -> None:
        panel = self.tab("Instances")
        panel.locator(".segnb-instances-backbone select").select_option("test_resnet")
        handle = panel.locator(".segnb-instances-epochs .noUi-handle")
        handle.focus()
        handle.press("ArrowLeft")  # 2 -> 1 epoch
        expect(panel.locator(".segnb-instances-epochs .widget-readout")).to_have_text("1")
        start = time.monotonic()
        panel.locator(".segnb-instances-train").click()
        status = panel.locator(".segnb-instances-status")
        until(lambda: "done" in status.inner_text(), 300, "Mask R-CNN trains one epoch and says it is done")
        self.timings["instances_train_s"] = time.monotonic() - start
        assert "mask AP50" in status.inner_text(), f"the status names the mask AP50: {status.inner_text()}"
        score = panel.locator(".segnb-instances-min-score .noUi-handle")
        score.focus()
        for _ in range(6):  # 0.30 -> 0.00: an epoch-old model's detections are shown too
            score.press("ArrowLeft")
        expect(panel.locator(".segnb-instances-min-score .widget-readout")).to_have_text("0.00")
        panel.locator(".segnb-instances-show").click()
        for name in ("truth", "predicted"):
            picture = panel.locator(f".segnb-instances-{name}")
            until(lambda p=picture: p.evaluate("img => img.complete && img.naturalWidth > 0"), 60,
                  f"the {name} instances are drawn, each instance in its own colour")
        readout = panel.locator(".segnb-instances-readout")
        until(lambda: readout.inner_text().strip(), 30, "the mask-head read-out says what was found")
        assert "No detection" not in readout.inner_text(), f"detections at min score 0: {readout.inner_text()}"
        before = readout.inner_text()
        slider = panel.locator(".segnb-instances-threshold .noUi-handle")
        slider.focus()
        slider.press("ArrowLeft")
        until(lambda: readout.inner_text() != before and "threshold 0.45" in readout.inner_text(), 15,
              "moving the threshold slider redraws the pasted mask")
        pasted = panel.locator(".segnb-maskhead-pasted")
        until(lambda: pasted.evaluate("img => img.complete && img.naturalWidth > 0"), 15,
              "the pasted 28x28 mask is drawn")
        self.no_error_box(panel, "Instances")
        self.shot("Instances")

    # -- lessons, staleness and presentation ----------------------------------------------------
    def save_lesson(self) -> None:
        panel = self.tab("Train")
        self.trained_status = panel.locator(".segnb-train-status").inner_text()
        assert "validation mIoU" in self.trained_status, self.trained_status
        sample = panel.locator("img.segnb-sample")
        self.trained_sample = until(lambda: sample.evaluate(JS_IMAGE_HASH), 20, "the prediction strip is drawn")
        path = self.root.locator(".segnb-lesson-path input")
        path.fill(str(self.artifacts / f"{self.prefix}-lesson.json"))
        path.press("Enter")
        self.root.locator(".segnb-save-lesson").click()
        expect(self.root.locator(".segnb-lesson-status"), "Save says what it saved"
               ).to_contain_text("Saved", timeout=30_000)
        assert "safetensors" in self.root.locator(".segnb-lesson-status").inner_text()

    def new_model_marks_old_results(self) -> None:
        panel = self.tab("Model")
        panel.locator(".segnb-build").click()
        stale = self.root.locator(".segnb-results.segnb-stale")
        until(lambda: stale.count() >= 4, 30, "Build marks the old results of Train, Inspect, IoU and Classical")
        for name in ("Train", "Inspect", "IoU", "Classical"):
            panel = self.tab(name)
            results = panel.locator(".segnb-results")
            text = results.inner_text()
            numbers = re.findall(r"\d+\.\d+", text)
            marked = "segnb-stale" in (results.get_attribute("class") or "")
            assert marked or not numbers, f"{name}: old numbers {numbers[:5]} on screen, not marked"
            expect(panel.locator(".segnb-stale-note"), f"{name} says its results are the previous model's"
                   ).to_contain_text("previous model")
            self.shot(f"{name}-stale")

    def restore_lesson(self) -> None:
        self.root.locator(".segnb-restore-lesson").click()
        expect(self.root.locator(".segnb-lesson-status"), "Restore says it restored"
               ).to_contain_text("Restored", timeout=120_000)
        panel = self.tab("Train")
        status = panel.locator(".segnb-train-status").inner_text()
        miou = re.search(r"validation mIoU (\d\.\d+)", self.trained_status).group(1)
        assert f"validation mIoU {miou}" in status and "restored" in status, (self.trained_status, status)
        sample = panel.locator("img.segnb-sample")
        restored = until(lambda: sample.evaluate(JS_IMAGE_HASH), 30, "the restored prediction strip is drawn")
        assert restored == self.trained_sample, "the restored lesson predicts differently from the trained model"
        assert "segnb-stale" not in (panel.locator(".segnb-results").get_attribute("class") or "")
        self.shot("Train-restored")

    def presentation(self) -> None:
        for name in TABS:
            self.tab(name)
            self.shot(name)
        if self.prefix == "lab":  # a teacher projecting from JupyterLab closes the file browser (Ctrl+B)
            self.page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
        self.root.locator(".segnb-presentation-toggle").click()
        expect(self.root, "presentation mode is on").to_have_class(re.compile("segnb-presentation"))
        viewport = self.page.viewport_size
        for name in TABS:
            panel = self.tab(name)
            time.sleep(0.5)  # charts redraw at their presentation size
            size, example = self.root.evaluate(JS_SMALLEST_TEXT)
            assert size >= 22, f"presentation mode, {name} tab: text of {size} px ({example})"
            view = panel.locator(MAIN_VIEW[name]).first
            view.scroll_into_view_if_needed()
            box = view.bounding_box()
            assert box and box["width"] <= viewport["width"] and box["height"] <= viewport["height"], \
                f"{name}: the main view ({box}) is larger than the {viewport} screen"
            assert box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= viewport["width"] + 1 \
                and box["y"] + box["height"] <= viewport["height"] + 1, f"{name}: main view outside the screen: {box}"
            self.page.screenshot(path=str(self.artifacts / f"{self.prefix}-present-{name.lower()}.png"))
        self.root.locator(".segnb-presentation-toggle").click()
