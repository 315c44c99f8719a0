// The page at GET /: classify dropped or picked images with POST /predict, and show GET /model.
// Plain JavaScript, no build step, nothing from another origin. Every field that other versions of
// the service may not send (versions, report, plots, confidence, training figures) is optional.
"use strict";

// Reference end points of Inception V2 (TF-slim names): every layer whose name starts with one
// belongs to that block (Mixed_3b_Branch_1_Conv2d_0b_3x3 is part of Mixed_3b).
const END_POINT = /^(Conv2d_\d+[a-z]_\d+x\d+|MaxPool_\d+[a-z]_\d+x\d+|Mixed_\d+[a-z]|Logits|Predictions)/;

const numberFormat = new Intl.NumberFormat("en");

// Small DOM builder: el("td", {className: "n"}, "text", otherNode).
function el(tag, properties = {}, ...children) {
  const node = Object.assign(document.createElement(tag), properties);
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

function percent(score) {
  return `${(score * 100).toFixed(1)} %`;
}

function shape(dimensions) {
  return dimensions.map((d) => (d === null ? "?" : d)).join(" × ");
}

function isPlainObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

// An error answer in words: the RFC 9457 body's title and detail, else the HTTP status line.
async function readProblem(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON (a proxy's page, say): the status line is all there is
  }
  const title = body?.title || `${response.status} ${response.statusText}`.trim();
  const detail = typeof body?.detail === "string" ? body.detail : "";
  return { status: response.status, title, detail, retry: response.headers.get("Retry-After") };
}

// --- Classifying images ---------------------------------------------------------------------------

function showProblem(container, problem) {
  container.replaceChildren(
    el(
      "div",
      { className: "problem", role: "alert" },
      el("p", { className: "problem-title" }, problem.status ? `${problem.title} (${problem.status})` : problem.title),
      problem.detail ? el("p", { className: "problem-detail" }, problem.detail) : null,
      problem.retry ? el("p", { className: "problem-retry" }, `Try again in ${problem.retry} s.`) : null,
    ),
  );
}

function predictionList(predictions) {
  const list = el("ol", { className: "predictions" });
  for (const prediction of predictions) {
    const bar = el("span", { className: "bar" }, el("span", { className: "bar-fill" }));
    bar.setAttribute("aria-hidden", "true");
    bar.firstChild.style.width = `${prediction.score * 100}%`;
    const item = el(
      "li",
      { className: "prediction" },
      el("span", { className: "label" }, prediction.label),
      el("span", { className: "score" }, percent(prediction.score)),
      bar,
    );
    item.dataset.label = prediction.label;
    item.dataset.score = String(prediction.score);
    list.append(item);
  }
  return list;
}

// One /predict result. An image the model is not sure of (`confident: false`: unlike its training
// data) says so first, and its guesses follow greyed, so no bar reads as an answer. Versions
// exported before confidence scores send `confident: null`: the bars alone, as before.
function showResult(container, result) {
  const list = predictionList(result.predictions);
  container.dataset.confident = String(result.confident ?? "unknown");
  if (result.confident === false) {
    list.classList.add("unsure");
    container.replaceChildren(
      el(
        "div",
        { className: "not-sure" },
        el("p", { className: "verdict" }, "Not sure"),
        el("p", { className: "verdict-detail" }, "This image is unlike what the model was trained on; its guesses:"),
      ),
      list,
    );
  } else {
    container.replaceChildren(list);
  }
}

async function classify(file, item) {
  const outcome = item.querySelector(".outcome");
  const form = new FormData();
  form.append("file", file, file.name);
  try {
    const response = await fetch("/predict", { method: "POST", body: form });
    if (response.ok) {
      showResult(outcome, (await response.json()).results[0]);
    } else {
      showProblem(outcome, await readProblem(response));
    }
  } catch (error) {
    // The service answers an oversize body with 413 and closes the connection; a browser still
    // sending the body may see only the closed connection.
    showProblem(outcome, {
      title: "The service could not be reached, or closed the connection",
      detail: `${error.message}. If the file is large, it may be over the service's upload limit.`,
    });
  } finally {
    item.setAttribute("aria-busy", "false");
  }
}

function addResult(file) {
  const item = document.getElementById("result-template").content.firstElementChild.cloneNode(true);
  item.setAttribute("aria-busy", "true");
  item.querySelector(".filename").textContent = file.name;
  const thumbnail = item.querySelector(".thumbnail");
  thumbnail.src = URL.createObjectURL(file);
  thumbnail.addEventListener("load", () => URL.revokeObjectURL(thumbnail.src));
  thumbnail.addEventListener("error", () => {
    URL.revokeObjectURL(thumbnail.src);
    thumbnail.replaceWith(el("span", { className: "thumbnail no-preview" }, "No preview"));
  });
  return item;
}

// The files of one drop or pick in their order, above the results of earlier ones.
function classifyAll(files) {
  const items = files.map(addResult);
  document.getElementById("results").prepend(...items);
  files.forEach((file, index) => classify(file, items[index]));
}

function setUpDropZone() {
  const input = document.getElementById("files");
  const zone = document.getElementById("drop-zone");
  input.addEventListener("change", () => {
    classifyAll([...input.files]);
    input.value = ""; // picking the same file again classifies it again
  });
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
  }
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    classifyAll([...event.dataTransfer.files]);
  });
  // A file dropped next to the zone would otherwise replace the page with the file.
  for (const type of ["dragover", "drop"]) {
    window.addEventListener(type, (event) => event.preventDefault());
  }
}

// --- The model card ------------------------------------------------------------------------------

// Layers grouped into the network's blocks, in order: output shape of the block's last layer,
// parameters summed. Layers outside any block (the input, the seed network's layers) stand alone.
function blocks(layers) {
  const result = [];
  for (const layer of layers) {
    const name = layer.name.match(END_POINT)?.[1] ?? layer.name;
    const last = result.at(-1);
    if (last?.name === name) {
      last.output_shape = layer.output_shape;
      last.params += layer.params;
      last.layers += 1;
    } else {
      result.push({ name, output_shape: layer.output_shape, params: layer.params, layers: 1 });
    }
  }
  return result;
}

function table(caption, headings, rows, className = "") {
  const head = el("tr", {}, ...headings.map((h) => el("th", { scope: "col" }, h)));
  const body = rows.map((cells) => el("tr", {}, ...cells.map((c) => (c instanceof Node ? c : el("td", {}, String(c))))));
  return el("table", { className }, el("caption", {}, caption), el("thead", {}, head), el("tbody", {}, ...body));
}

function definitions(pairs) {
  const list = el("dl", { className: "facts" });
  for (const [term, value] of pairs) {
    if (value !== undefined && value !== null && value !== "") {
      list.append(el("div", {}, el("dt", {}, term), el("dd", {}, value)));
    }
  }
  return list;
}

function architectureSection(architecture) {
  const rows = blocks(architecture.layers).map((block) => [
    el("th", { scope: "row" }, block.name),
    el("td", {}, shape(block.output_shape)),
    el("td", { className: "number" }, numberFormat.format(block.params)),
  ]);
  return el(
    "section",
    { className: "architecture" },
    el("h3", {}, "Architecture"),
    definitions([
      ["Network", architecture.name],
      ["Input shape", shape(architecture.input_shape)],
      ["Parameters", `${numberFormat.format(architecture.total_params)} (${numberFormat.format(architecture.trainable_params)} trainable)`],
    ]),
    table("Blocks: output shape and parameters", ["Block", "Output shape", "Parameters"], rows, "blocks"),
  );
}

function versionsSection(versions, served) {
  const rows = versions.map((v) => [
    el("th", { scope: "row" }, v.version === served ? `${v.version} (shown)` : String(v.version)),
    el("td", {}, v.state),
    el("td", {}, (v.version_labels ?? []).join(", ") || "–"),
    el("td", {}, v.error ?? "–"),
  ]);
  return el(
    "section",
    { className: "versions" },
    el("h3", {}, "Versions"),
    table("Every version the service knows", ["Version", "State", "Labels", "Error"], rows),
  );
}

function formatValue(value) {
  if (typeof value === "number" && !Number.isInteger(value)) {
    return String(Number(value.toPrecision(4))); // 0.001, 0.8733
  }
  if (Array.isArray(value)) {
    return value.map(formatValue).join(", ");
  }
  if (isPlainObject(value)) {
    return JSON.stringify(value);
  }
  return value === null || value === undefined ? "none" : String(value);
}

function ratio(value) {
  return typeof value === "number" ? percent(value) : "n/a";
}

function count(n, noun, plural = `${noun}s`) {
  return `${numberFormat.format(n)} ${n === 1 ? noun : plural}`;
}

function duration(seconds) {
  const minutes = Math.floor(seconds / 60);
  return minutes ? `${minutes} min ${Math.round(seconds % 60)} s` : `${Math.round(seconds)} s`;
}

// The settings the sentence below puts in words; any other is listed by name.
const SETTINGS_IN_WORDS = new Set([
  "arch", "image_size", "epochs", "patience", "batch_size", "learning_rate", "seed", "augment", "validation_split",
]);

// The training summary as exported, in words: data counts, settings, accuracy, then per class.
function trainingSection(training) {
  const section = el("section", { className: "training" }, el("h3", {}, "Training"));
  const data = isPlainObject(training.data) ? training.data : {};
  const params = isPlainObject(training.params) ? training.params : {};
  const metrics = isPlainObject(training.metrics) ? training.metrics : {};
  const sentences = [];
  if (typeof data.num_train === "number") {
    const classes = isPlainObject(data.train_per_class) ? ` of ${count(Object.keys(data.train_per_class).length, "class", "classes")}` : "";
    const held = typeof data.num_validation === "number" ? `, validated on ${numberFormat.format(data.num_validation)} held back` : "";
    const share = typeof params.validation_split === "number" ? ` (${percent(params.validation_split)})` : "";
    const skipped = Array.isArray(data.skipped_files) && data.skipped_files.length ? `; ${count(data.skipped_files.length, "unreadable file")} skipped` : "";
    sentences.push(`Trained on ${count(data.num_train, "image")}${classes}${held}${share}${skipped}.`);
  }
  if (params.arch !== undefined) {
    const size = params.image_size ? ` at ${params.image_size} × ${params.image_size} pixels` : "";
    const run = typeof metrics.epochs_run === "number" ? ` (${metrics.epochs_run} run)` : "";
    const patience = params.patience ? `, stopping early after ${count(params.patience, "epoch")} without progress` : "";
    const took = typeof training.duration_seconds === "number" ? ` It took ${duration(training.duration_seconds)}${training.device ? ` on ${training.device}` : ""}.` : "";
    sentences.push(
      `The ${params.arch} network${size}, up to ${count(params.epochs, "epoch")}${run}${patience}; batches of ${params.batch_size}, ` +
        `learning rate ${formatValue(params.learning_rate)}, seed ${params.seed}, ${params.augment ? "with" : "without"} augmentation.${took}`,
    );
  }
  if (typeof metrics.val_accuracy === "number") {
    sentences.push(`Validation accuracy: ${percent(metrics.val_accuracy)}.`);
  }
  for (const sentence of sentences) {
    section.append(el("p", {}, sentence));
  }
  if (isPlainObject(metrics.per_class) && Object.keys(metrics.per_class).length) {
    const rows = Object.entries(metrics.per_class).map(([name, row]) => [
      el("th", { scope: "row" }, name),
      el("td", { className: "number" }, ratio(row.precision)),
      el("td", { className: "number" }, ratio(row.recall)),
      el("td", { className: "number" }, ratio(row.f1)),
      el("td", { className: "number" }, numberFormat.format(row.support)),
    ]);
    section.append(table("Per class, on the validation images", ["Class", "Precision", "Recall", "F1", "Images"], rows, "per-class"));
  }
  const inWords = params.arch === undefined ? new Set() : SETTINGS_IN_WORDS;
  const others = Object.entries(params).filter(([key]) => !inWords.has(key));
  if (others.length) {
    section.append(el("h4", {}, "Other settings"), definitions(others.map(([key, value]) => [key.replaceAll("_", " "), formatValue(value)])));
  }
  return section;
}

// How far to trust an answer: the threshold of "not sure" and the calibration, in words.
function confidenceSection(confidence) {
  const section = el("section", { className: "confidence" }, el("h3", {}, "Confidence"));
  if (typeof confidence.threshold !== "number") {
    section.append(el("p", {}, "This version was exported before confidence scores: its probabilities are not calibrated, and it cannot say when it is not sure."));
    return section;
  }
  const how = confidence.threshold_source === "setting" ? "set by the service's OOD_THRESHOLD" : `chosen at export: it ${confidence.threshold_rule}`;
  section.append(el("p", {}, `An answer reads “not sure” when the image's out-of-distribution score (${confidence.method}) is above ${formatValue(confidence.threshold)}, a threshold ${how}.`));
  const calibration = confidence.calibration;
  if (calibration) {
    section.append(
      el(
        "p",
        {},
        `Probabilities are calibrated by ${calibration.method} (T = ${formatValue(confidence.temperature)}), fitted on ${calibration.fitted_on}: ` +
          `expected calibration error ${percent(calibration.ece_before)} before, ${percent(calibration.ece_after)} after.`,
      ),
    );
  }
  return section;
}

// The training report's plots, as /model lists them, and a link to the whole report.
function reportSection(url, plots) {
  const section = el("section", { className: "report" }, el("h3", {}, "Training report"));
  if (url) {
    section.append(el("p", {}, el("a", { href: url }, "Open the full training report")));
  }
  const gallery = el("div", { className: "plots" });
  for (const plot of plots) {
    gallery.append(el("figure", { className: "plot" }, el("img", { src: plot.url, alt: plot.caption }), el("figcaption", {}, plot.caption)));
  }
  section.append(gallery);
  return section;
}

function renderCard(info) {
  document.getElementById("model-line").textContent = `Serving ${info.name} version ${info.version}`;
  const labels = el("ul", { className: "labels" }, ...info.labels.map((label) => el("li", {}, label)));
  const parts = [
    definitions([
      ["Name", info.name],
      ["Version", String(info.version)],
      ["Created", info.created_at ? new Date(info.created_at).toUTCString() : null],
      ["Input size", info.input ? `${info.input.height} × ${info.input.width} pixels` : null],
      ["JPEG decoding", { dct: "reduced DCT scale", full: "full size" }[info.input?.jpeg_scaling] ?? null],
      ["Device", info.runtime?.device],
    ]),
    el("section", {}, el("h3", {}, `Labels (${info.labels.length})`), labels),
  ];
  if (isPlainObject(info.confidence)) {
    parts.push(confidenceSection(info.confidence));
  }
  if (isPlainObject(info.training) && Object.keys(info.training).length) {
    parts.push(trainingSection(info.training));
  }
  const plots = Array.isArray(info.plots) ? info.plots : [];
  if (info.report || plots.length) {
    parts.push(reportSection(info.report, plots));
  }
  if (Array.isArray(info.versions) && info.versions.length) {
    parts.push(versionsSection(info.versions, info.version));
  }
  if (info.architecture?.layers) {
    parts.push(architectureSection(info.architecture));
  }
  document.getElementById("card-body").replaceChildren(...parts);
}

async function loadCard() {
  const body = document.getElementById("card-body");
  try {
    const response = await fetch("/model");
    if (response.ok) {
      renderCard(await response.json());
      return;
    }
    const problem = await readProblem(response);
    showProblem(body, problem);
    document.getElementById("model-line").textContent = "The model is not available yet.";
    if (response.status === 503) {
      // Loading or restarting: try again when the service says to.
      const seconds = Number(response.headers.get("Retry-After")) || 2;
      setTimeout(loadCard, seconds * 1000);
    }
  } catch (error) {
    showProblem(body, { title: "The service could not be reached", detail: error.message });
  }
}

setUpDropZone();
loadCard();
