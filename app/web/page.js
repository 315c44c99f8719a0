// The page at GET /: classify dropped or picked images with POST /predict, and show GET /model.
// Plain JavaScript, no build step, nothing from another origin. Every field that other versions of
// the service may not send (versions, report, training figures) is optional.
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

function showPredictions(container, predictions) {
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
  container.replaceChildren(list);
}

async function classify(file, item) {
  const outcome = item.querySelector(".outcome");
  const form = new FormData();
  form.append("file", file, file.name);
  try {
    const response = await fetch("/predict", { method: "POST", body: form });
    if (response.ok) {
      showPredictions(outcome, (await response.json()).results[0].predictions);
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

// A list of numbers (a training curve) as an SVG line, with its first and last values in words.
function sparkline(name, values) {
  const width = 240;
  const height = 60;
  const low = Math.min(...values);
  const span = Math.max(...values) - low || 1;
  const step = values.length > 1 ? width / (values.length - 1) : 0;
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(height - ((v - low) / span) * height).toFixed(1)}`);
  const svgNS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNS, "svg");
  svg.setAttribute("viewBox", `-2 -2 ${width + 4} ${height + 4}`);
  svg.setAttribute("class", "sparkline");
  svg.setAttribute("aria-hidden", "true");
  const line = document.createElementNS(svgNS, "polyline");
  line.setAttribute("points", points.join(" "));
  svg.append(line);
  const words = `${values.length} values, from ${formatValue(values[0])} to ${formatValue(values.at(-1))}`;
  return el("figure", { className: "curve" }, svg, el("figcaption", {}, `${name}: ${words}`));
}

function formatValue(value) {
  if (typeof value === "number" && !Number.isInteger(value)) {
    return String(Number(value.toPrecision(4))); // 0.001, 0.8733
  }
  return value === null ? "n/a" : String(value);
}

// Training figures as exported: whatever keys they have, numbers and words as a list, nested
// groups as sub-sections, number series as curves.
function figures(name, value, level) {
  const section = el("section", { className: "figures" }, el(`h${Math.min(level, 6)}`, {}, name));
  const scalars = [];
  for (const [key, item] of Object.entries(value)) {
    if (Array.isArray(item) && item.length && item.every((v) => typeof v === "number")) {
      section.append(sparkline(key, item));
    } else if (isPlainObject(item)) {
      if (Object.keys(item).length) {
        section.append(figures(key, item, level + 1));
      }
    } else {
      scalars.push([key, Array.isArray(item) ? item.map(formatValue).join(", ") : formatValue(item)]);
    }
  }
  if (scalars.length) {
    section.querySelector(`h${Math.min(level, 6)}`).after(definitions(scalars));
  }
  return section;
}

// The training report (an HTML page of the service): a link, and its plots shown here if any.
async function reportSection(url) {
  const section = el(
    "section",
    { className: "report" },
    el("h3", {}, "Training report"),
    el("p", {}, el("a", { href: url }, "Open the full training report")),
  );
  try {
    const response = await fetch(url);
    if (response.ok && (response.headers.get("Content-Type") ?? "").includes("text/html")) {
      const report = new DOMParser().parseFromString(await response.text(), "text/html");
      const base = new URL(url, window.location.href);
      for (const [index, image] of [...report.querySelectorAll("img[src]")].entries()) {
        const source = new URL(image.getAttribute("src"), base);
        const caption = image.getAttribute("alt") || `Plot ${index + 1}`;
        section.append(el("figure", { className: "plot" }, el("img", { src: source.href, alt: caption }), el("figcaption", {}, caption)));
      }
    }
  } catch {
    // the link above still works; plots are a convenience
  }
  return section;
}

async function renderCard(info) {
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
  if (Array.isArray(info.versions) && info.versions.length) {
    parts.push(versionsSection(info.versions, info.version));
  }
  const columns = el("div", { className: "columns" });
  if (info.architecture?.layers) {
    columns.append(architectureSection(info.architecture));
  }
  if (isPlainObject(info.training) && Object.keys(info.training).length) {
    columns.append(figures("Training", info.training, 3));
  }
  parts.push(columns);
  if (typeof info.report === "string" && info.report) {
    parts.push(await reportSection(info.report));
  }
  document.getElementById("card-body").replaceChildren(...parts);
}

async function loadCard() {
  const body = document.getElementById("card-body");
  try {
    const response = await fetch("/model");
    if (response.ok) {
      await renderCard(await response.json());
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
