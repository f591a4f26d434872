// busnet viewer: one image to POST v1/predict, drawn with the answer's mask, contour and box; the
// image itself is the browser's decoding of the file, or the service's (POST v1/preview) for DICOM.
// Plain script, no dependencies, relative URLs (works offline and under any route prefix of the app).
"use strict";

const MASK_RGB = [0, 180, 255]; // --mask in viewer.css
const CONTOUR_RGB = [255, 45, 45]; // --contour in viewer.css
const DICOM_EXTENSIONS = [".dcm", ".dicom"];
const METRIC_NAMES = {
  acc: "accuracy", sens: "sensitivity", spec: "specificity", f1: "F1", auc: "ROC AUC",
  auc_hard: "ROC AUC (hard labels)", fnr: "false negative rate", fpr: "false positive rate",
  loss: "loss", dsc: "Dice (lesion)", ji: "Jaccard (lesion)",
};
// What each status of the API means to a user; the server's own `error` text follows.
const STATUS_MESSAGES = {
  400: "The service could not read this image (corrupt, truncated or empty file).",
  413: "The file is too large for the service (too many bytes or pixels).",
  415: "Unsupported file type: choose a PNG, JPEG, BMP or DICOM (.dcm) image.",
  422: "The service read the file but cannot use its pixels.",
  500: "The service failed on this image; its log has the details.",
  503: "The service is not ready or is overloaded; try again in a moment.",
};

const $ = (id) => document.getElementById(id);
let current = null; // AbortController of the request in flight: a newer choice cancels it
let lastDicom = null; // the last DICOM file analysed: a new frame number analyses it again

/** A readable one-paragraph message for an HTTP answer that is not 200. */
async function describeFailure(response) {
  let detail = "";
  const text = await response.text();
  try {
    detail = JSON.parse(text).error || "";
  } catch {
    detail = text.trim().slice(0, 300); // Serve's proxy answers some errors (503) in plain text
  }
  const meaning = STATUS_MESSAGES[response.status] || "The service gave an unexpected answer.";
  return `${meaning} (HTTP ${response.status}${detail ? ": " + detail : ""})`;
}

function networkMessage(error) {
  return `Cannot reach the busnet service at ${location.origin} (network error: ${error.message}). ` +
    "Is `busnet serve` still running?";
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
  $("status").textContent = "";
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

/** The Content-Type to send: the browser's type, or DICOM by extension or by its "DICM" preamble. */
async function contentTypeOf(file) {
  const name = file.name.toLowerCase();
  if (DICOM_EXTENSIONS.some((ext) => name.endsWith(ext))) return "application/dicom";
  const head = new Uint8Array(await file.slice(128, 132).arrayBuffer());
  if (String.fromCharCode(...head) === "DICM") return "application/dicom";
  return file.type || "application/octet-stream";
}

async function analyse(file) {
  if (current) current.abort();
  const controller = new AbortController();
  current = controller;
  clearError();
  $("status").textContent = `Analysing ${file.name}…`;
  let response;
  const type = await contentTypeOf(file);
  const frame = $("frame").value.trim();
  lastDicom = type === "application/dicom" ? file : null;
  const query = lastDicom && frame ? `?frame=${encodeURIComponent(frame)}` : "";
  try {
    response = await fetch(`v1/predict${query}`, {
      method: "POST", body: file, headers: { "Content-Type": type }, signal: controller.signal,
    });
  } catch (error) {
    if (controller.signal.aborted) return;
    showError(`${file.name}: ${networkMessage(error)}`);
    return;
  }
  if (controller.signal.aborted) return;
  if (!response.ok) {
    showError(`${file.name}: ${await describeFailure(response)}`);
    return;
  }
  const answer = await response.json();
  if (controller.signal.aborted) return;
  try {
    await render(file, type, query, answer, controller.signal);
  } catch (error) {
    if (controller.signal.aborted) return;
    showError(`${file.name}: ${error.message}`);
    return;
  }
  if (controller.signal.aborted) return;
  $("status").textContent = `Analysed ${file.name}.`;
}

/** The mask PNG of the answer as a Uint8Array of 0/1 per pixel, with its size. */
async function decodeMask(base64) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  const bitmap = await createImageBitmap(new Blob([bytes], { type: "image/png" }), {
    colorSpaceConversion: "none", premultiplyAlpha: "none",
  });
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const context = canvas.getContext("2d");
  context.drawImage(bitmap, 0, 0);
  const rgba = context.getImageData(0, 0, bitmap.width, bitmap.height).data;
  const mask = new Uint8Array(bitmap.width * bitmap.height);
  for (let i = 0; i < mask.length; i++) mask[i] = rgba[4 * i] > 127 ? 1 : 0;
  return { mask, width: bitmap.width, height: bitmap.height };
}

/** The image as the browser decodes it, if it can and at the mask's size (a JPEG's rotation tag
 * turns it in the browser, not in the service); else as the service decodes it (POST v1/preview:
 * an 8-bit PNG of the same body and frame), DICOM always. Throws an Error with a readable message. */
async function decodeImage(file, type, query, shape, signal) {
  if (type !== "application/dicom") {
    try {
      const image = await createImageBitmap(file);
      if (!shape || (image.width === shape.width && image.height === shape.height)) return { image, local: true };
    } catch {
      // not drawable here: the service decodes it below
    }
  }
  let response;
  try {
    response = await fetch(`v1/preview${query}`, {
      method: "POST", body: file, headers: { "Content-Type": type }, signal,
    });
  } catch (error) {
    throw new Error(signal.aborted ? "aborted" : networkMessage(error));
  }
  if (!response.ok) throw new Error(await describeFailure(response));
  return { image: await createImageBitmap(await response.blob()), local: false };
}

function sizeCanvas(canvas, width, height) {
  canvas.width = width;
  canvas.height = height;
  return canvas.getContext("2d");
}

function drawMask(mask, width, height) {
  const context = sizeCanvas($("mask-layer"), width, height);
  const pixels = context.createImageData(width, height);
  for (let i = 0; i < mask.length; i++) {
    if (!mask[i]) continue;
    pixels.data.set(MASK_RGB, 4 * i);
    pixels.data[4 * i + 3] = 255; // translucency comes from the layer's opacity (the slider)
  }
  context.putImageData(pixels, 0, 0);
}

/** The lesion's edge: mask pixels with a 4-neighbour outside the mask (or the image), thickened
 * for large images so that it stays visible when the image is shown smaller. */
function drawContour(mask, width, height) {
  const context = sizeCanvas($("contour-layer"), width, height);
  const pixels = context.createImageData(width, height);
  const thickness = Math.max(1, Math.ceil(Math.max(width, height) / 800));
  const inside = (x, y) => x >= 0 && y >= 0 && x < width && y < height && mask[y * width + x];
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (!mask[y * width + x]) continue;
      if (inside(x - 1, y) && inside(x + 1, y) && inside(x, y - 1) && inside(x, y + 1)) continue;
      for (let dy = 0; dy < thickness; dy++) {
        for (let dx = 0; dx < thickness; dx++) {
          const px = x + dx - Math.floor(thickness / 2);
          const py = y + dy - Math.floor(thickness / 2);
          if (px < 0 || py < 0 || px >= width || py >= height) continue;
          pixels.data.set(CONTOUR_RGB, 4 * (py * width + px));
          pixels.data[4 * (py * width + px) + 3] = 255;
        }
      }
    }
  }
  context.putImageData(pixels, 0, 0);
}

function drawBox(bbox, width, height) {
  const svg = $("box-layer");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const box = $("box");
  box.style.display = bbox ? "" : "none";
  const [x0, y0, x1, y1] = bbox || [0, 0, 0, 0];
  box.setAttribute("x", x0);
  box.setAttribute("y", y0);
  box.setAttribute("width", x1 - x0);
  box.setAttribute("height", y1 - y0);
}

async function render(file, type, query, answer, signal) {
  const shape = answer.mask_png ? await decodeMask(answer.mask_png) : null;
  const { image, local } = await decodeImage(file, type, query, shape, signal);
  if (signal.aborted) return;
  const width = shape ? shape.width : image.width;
  const height = shape ? shape.height : image.height;
  sizeCanvas($("image-layer"), width, height).drawImage(image, 0, 0);
  const notes = local ? [] : ["image as the service decoded it (8-bit)"];
  if (shape) {
    drawMask(shape.mask, width, height);
    drawContour(shape.mask, width, height);
  } else {
    sizeCanvas($("mask-layer"), width, height);
    sizeCanvas($("contour-layer"), width, height);
    notes.push("This model variant has no segmentation head: no lesion mask.");
  }
  drawBox(answer.lesion.bbox, width, height);
  $("image-layer").setAttribute("aria-label", `${file.name} with the model's lesion overlay`);
  $("caption").textContent = [file.name, ...notes].join(" — ");
  $("figure").hidden = false;
  showResult(answer, width, height);
}

function showResult(answer, width, height) {
  const p = answer.malignant_probability;
  const t = answer.threshold;
  const label = $("label");
  label.textContent = answer.label;
  label.className = answer.label;
  $("probability").textContent = p.toFixed(3);
  $("threshold").textContent = t.toFixed(3);
  $("meter-fill").style.width = `${(100 * p).toFixed(1)}%`;
  $("meter-threshold").style.left = `${(100 * t).toFixed(1)}%`;
  $("meter").setAttribute("aria-label",
    `probability ${p.toFixed(3)} is ${p >= t ? "at or above" : "below"} the threshold ${t.toFixed(3)}`);
  const area = answer.lesion.area_px;
  $("area").textContent = area === null ? "no mask (classification only)"
    : `${area} px (${((100 * area) / (width * height)).toFixed(1)}% of the image)`;
  $("bbox").textContent = answer.lesion.bbox ? answer.lesion.bbox.join(", ") : "no lesion found";
  $("size").textContent = `${width} × ${height} px`;
  $("answered-by").textContent = `${answer.model.name} ${answer.model.version}`; // the model of this answer
  $("no-result").hidden = true;
  $("result-body").hidden = false;
}

function metricName(key) {
  const bare = key.replace(/^val_/, "");
  return METRIC_NAMES[bare] || bare.replace(/_/g, " ");
}

/** The served model's name, version and validation metrics (GET v1/model). */
async function loadModel() {
  let response;
  try {
    response = await fetch("v1/model");
  } catch (error) {
    $("model-status").textContent = `Model description unavailable. ${networkMessage(error)}`;
    return;
  }
  if (!response.ok) {
    $("model-status").textContent = `Model description unavailable. ${await describeFailure(response)}`;
    return;
  }
  const info = await response.json();
  const model = info.model || {};
  const metrics = info.metrics || {};
  const threshold = (info.config || {}).threshold ?? metrics.threshold;
  $("model-name").textContent = model.name ?? "unknown";
  $("model-version").textContent = model.version || "unknown";
  $("model-preset").textContent = `${model.preset ?? "—"}; data: ${Object.entries(info.data?.sources ?? {}).map(([k, n]) => `${k} ${n} images`).join(", ") || "not recorded"}${info.data?.synthetic_only ? " (synthetic images only: its answers on real ultrasound mean nothing)" : ""}`;
  $("model-threshold").textContent = typeof threshold === "number" ? threshold.toFixed(3) : "—";
  $("model-facts").hidden = false;
  const rows = Object.entries(metrics).filter(([key, value]) => key.startsWith("val_") && typeof value === "number");
  const body = $("metrics-body");
  body.replaceChildren(...rows.map(([key, value]) => {
    const row = document.createElement("tr");
    row.dataset.metric = key;
    const name = document.createElement("th");
    name.scope = "row";
    name.textContent = metricName(key);
    const cell = document.createElement("td");
    cell.textContent = value.toFixed(3);
    row.append(name, cell);
    return row;
  }));
  $("metrics").hidden = rows.length === 0;
  const epoch = typeof metrics.epoch === "number" ? ` (checkpoint of epoch ${metrics.epoch})` : "";
  $("metrics-caption").textContent = `Validation metrics${epoch}`;
  $("model-status").textContent = rows.length ? "" : "No validation metrics recorded with this checkpoint.";
  $("model-status").hidden = rows.length > 0;
}

function setOpacity() {
  const value = $("opacity").value;
  $("mask-layer").style.opacity = String(value / 100);
  $("opacity-value").textContent = `${value}%`;
}

function wireInput() {
  const input = $("file");
  $("choose").addEventListener("click", () => input.click());
  input.addEventListener("change", () => {
    if (input.files.length) analyse(input.files[0]);
    input.value = ""; // choosing the same file again analyses it again
  });
  const zone = $("dropzone");
  // Drops anywhere on the page land here (instead of the browser navigating to the file).
  for (const name of ["dragenter", "dragover"]) {
    document.addEventListener(name, (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
  }
  document.addEventListener("dragleave", (event) => {
    if (!event.relatedTarget) zone.classList.remove("dragging");
  });
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    const files = event.dataTransfer.files;
    if (files.length) analyse(files[0]);
  });
  $("frame").addEventListener("change", () => {
    if (lastDicom) analyse(lastDicom);
  });
  $("opacity").addEventListener("input", setOpacity);
  setOpacity();
}

wireInput();
loadModel();
