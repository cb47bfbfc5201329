// Typed results as HTML: text, tables, charts re-plotted as SVG, JSON with confidences, metadata.
// Everything is built with DOM calls and textContent: model output is never parsed as HTML.

const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#1d4e89", "#d1495b", "#2a9d8f", "#e9c46a", "#8d5a97", "#f4a261", "#457b9d"];

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name === "class") node.className = value;
    else if (name === "style") Object.assign(node.style, value); // CSSOM: allowed by the CSP
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function textBlock(text) {
  return el("pre", { class: "text", tabindex: 0, text: text || "(empty)" });
}

// -- confidence ----------------------------------------------------------------------------

export function confidenceClass(value) {
  if (value === undefined || value === null) return "";
  if (value < 0.5) return "conf-low";
  if (value < 0.85) return "conf-mid";
  return "conf-high";
}

function confidenceLegend() {
  return el(
    "p",
    { class: "legend" },
    el("span", { class: "conf-low", text: "below 50%" }),
    el("span", { class: "conf-mid", text: "50–85%" }),
    el("span", { class: "conf-high", text: "85% and over" }),
    el("span", { text: "(the model's own token probability, not a calibrated accuracy)" }),
  );
}

function percent(value) {
  return `${Math.round(value * 1000) / 10}%`;
}

function pointerPart(key) {
  return String(key).replaceAll("~", "~0").replaceAll("/", "~1");
}

/** The JSON value as rows of pointer → value, each leaf shaded by its confidence. */
export function jsonTree(value, confidence) {
  const tree = el("div", { class: "json-tree", role: "list", "aria-label": "Extracted fields" });
  const walk = (node, pointer, depth) => {
    const isObject = node !== null && typeof node === "object";
    if (isObject && Object.keys(node).length) {
      for (const [key, child] of Object.entries(node)) {
        const here = `${pointer}/${pointerPart(key)}`;
        const childIsObject = child !== null && typeof child === "object" && Object.keys(child).length;
        if (childIsObject) {
          tree.append(el("div", { class: "row", role: "listitem", style: { paddingLeft: `${depth}rem` } },
            el("span", { class: "key", text: `${key}` })));
          walk(child, here, depth + 1);
        } else {
          leaf(key, child, here, depth);
        }
      }
    } else {
      leaf("", node, pointer, depth);
    }
  };
  const leaf = (key, node, pointer, depth) => {
    const score = confidence ? confidence[pointer] : undefined;
    const row = el("div", {
      class: `row ${confidenceClass(score)}`.trim(),
      role: "listitem",
      style: { paddingLeft: `${depth}rem` },
      "data-pointer": pointer,
      "data-confidence": score === undefined ? null : String(score),
    });
    row.append(el("span", { class: "key", text: key === "" ? "(value)" : String(key) }));
    row.append(el("span", { class: "value", text: JSON.stringify(node) }));
    if (score !== undefined) row.append(el("span", { class: "conf", text: `confidence ${percent(score)}` }));
    tree.append(row);
  };
  walk(value, "", 0);
  return tree;
}

// -- tables --------------------------------------------------------------------------------

export function dataTable(columns, rows, caption) {
  const table = el("table", { class: "data" });
  if (caption) table.append(el("caption", { text: caption }));
  const head = el("tr");
  for (const column of columns) head.append(el("th", { scope: "col", text: column }));
  table.append(el("thead", {}, head));
  const body = el("tbody");
  for (const row of rows) {
    const tr = el("tr");
    for (const cell of row) tr.append(el("td", { text: cell === null || cell === undefined ? "" : String(cell) }));
    body.append(tr);
  }
  table.append(body);
  return table;
}

// -- charts --------------------------------------------------------------------------------

function niceTicks(low, high, count = 5) {
  if (low === high) high = low + 1;
  const raw = (high - low) / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) || raw;
  const start = Math.floor(low / step) * step;
  const ticks = [];
  for (let t = start; t <= high + step * 0.5; t += step) ticks.push(Math.round(t * 1e9) / 1e9);
  return ticks;
}

function axisTitle(axis) {
  if (!axis) return "";
  return [axis.label, axis.unit ? `(${axis.unit})` : ""].filter(Boolean).join(" ");
}

/** The chart's data drawn again as an SVG (bars for bar-like charts, lines otherwise). */
export function replot(chart) {
  const series = (chart.series || []).filter((s) => (s.points || []).length);
  const categories = [];
  for (const s of series) for (const p of s.points) if (!categories.includes(p.label)) categories.push(p.label);
  const values = series.flatMap((s) => s.points.map((p) => p.value)).filter((v) => typeof v === "number");
  const width = 640, height = 380, left = 64, right = 16, top = 40, bottom = 72;
  const root = svg("svg", {
    viewBox: `0 0 ${width} ${height}`, class: "replot", id: "chart-plot", role: "img",
    "aria-label": `Re-plot of ${chart.title || "the chart"}: ${series.length} series, ${categories.length} categories`,
  });
  root.append(svg("title", {}, `Re-plot of ${chart.title || "the chart"}`));
  root.append(svg("text", { x: width / 2, y: 22, "text-anchor": "middle", "font-size": 16, "font-weight": 600 }, chart.title || ""));
  if (!values.length || !categories.length) {
    root.append(svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle" }, "No numeric values to plot"));
    return root;
  }
  const ticks = niceTicks(Math.min(0, ...values), Math.max(0, ...values));
  const low = ticks[0], high = ticks[ticks.length - 1];
  const plotW = width - left - right, plotH = height - top - bottom;
  const y = (v) => top + plotH - ((v - low) / (high - low || 1)) * plotH;
  const band = plotW / categories.length;
  const x = (i) => left + band * (i + 0.5);
  for (const t of ticks) {
    root.append(svg("line", { x1: left, x2: width - right, y1: y(t), y2: y(t), stroke: "#e3e6ea" }));
    root.append(svg("text", { x: left - 6, y: y(t) + 4, "text-anchor": "end", "font-size": 11 }, String(t)));
  }
  root.append(svg("line", { x1: left, x2: left, y1: top, y2: top + plotH, stroke: "#333" }));
  root.append(svg("line", { x1: left, x2: width - right, y1: y(Math.max(low, 0)), y2: y(Math.max(low, 0)), stroke: "#333" }));
  const rotate = categories.length > 6;
  categories.forEach((label, i) => {
    const attrs = { x: x(i), y: top + plotH + 16, "text-anchor": rotate ? "end" : "middle", "font-size": 11 };
    if (rotate) attrs.transform = `rotate(-35 ${x(i)} ${top + plotH + 16})`;
    root.append(svg("text", attrs, label));
  });
  const kind = (chart.chart_type || "").toLowerCase();
  const bars = !/line|scatter|area/.test(kind);
  series.forEach((s, k) => {
    const color = COLORS[k % COLORS.length];
    const group = svg("g", { class: "series", "data-series": s.name || `series ${k + 1}` });
    if (bars) {
      const barW = (band * 0.8) / series.length;
      for (const p of s.points) {
        if (typeof p.value !== "number") continue;
        const i = categories.indexOf(p.label);
        const x0 = x(i) - band * 0.4 + barW * k;
        const y0 = y(Math.max(p.value, 0)), y1 = y(Math.min(p.value, 0));
        const rect = svg("rect", { x: x0, y: y0, width: Math.max(1, barW - 2), height: Math.max(1, y1 - y0), fill: color, class: "bar" });
        rect.append(svg("title", {}, `${p.label}: ${p.value}`));
        group.append(rect);
      }
    } else {
      const points = s.points.filter((p) => typeof p.value === "number").map((p) => `${x(categories.indexOf(p.label))},${y(p.value)}`);
      if (!/scatter/.test(kind)) group.append(svg("polyline", { points: points.join(" "), fill: "none", stroke: color, "stroke-width": 2 }));
      for (const p of s.points) {
        if (typeof p.value !== "number") continue;
        const dot = svg("circle", { cx: x(categories.indexOf(p.label)), cy: y(p.value), r: 4, fill: color, class: "dot" });
        dot.append(svg("title", {}, `${p.label}: ${p.value}`));
        group.append(dot);
      }
    }
    root.append(group);
  });
  root.append(svg("text", { x: left + plotW / 2, y: height - 8, "text-anchor": "middle", "font-size": 12 }, axisTitle(chart.x_axis)));
  root.append(svg("text", { x: 14, y: top + plotH / 2, "text-anchor": "middle", "font-size": 12, transform: `rotate(-90 14 ${top + plotH / 2})` }, axisTitle(chart.y_axis)));
  if (series.length > 1) {
    series.forEach((s, k) => {
      root.append(svg("rect", { x: left + k * 120, y: 28, width: 10, height: 10, fill: COLORS[k % COLORS.length] }));
      root.append(svg("text", { x: left + k * 120 + 14, y: 37, "font-size": 11 }, s.name || `series ${k + 1}`));
    });
  }
  return root;
}

function chartTable(chart) {
  const series = chart.series || [];
  const categories = [];
  for (const s of series) for (const p of s.points || []) if (!categories.includes(p.label)) categories.push(p.label);
  const columns = [axisTitle(chart.x_axis) || "label", ...series.map((s, k) => s.name || `series ${k + 1}`)];
  const rows = categories.map((label) => [
    label,
    ...series.map((s) => {
      const point = (s.points || []).find((p) => p.label === label);
      return point ? (point.value ?? point.raw ?? "") : "";
    }),
  ]);
  return dataTable(columns, rows, "The chart's data");
}

// -- per result type -----------------------------------------------------------------------

function renderOCR(result) {
  const box = el("div");
  const lines = result.lines || [];
  if (lines.some((line) => typeof line.confidence === "number")) {
    const list = el("div", { class: "json-tree", role: "list", "aria-label": "Lines with confidence" });
    for (const line of lines) {
      list.append(el("div", { class: `row ${confidenceClass(line.confidence)}`.trim(), role: "listitem" },
        el("span", { class: "value", text: line.text }),
        typeof line.confidence === "number" ? el("span", { class: "conf", text: `confidence ${percent(line.confidence)}` }) : null));
    }
    box.append(list, confidenceLegend());
  } else {
    box.append(textBlock(result.markdown || result.text));
  }
  return box;
}

function renderChart(result, original) {
  const wrap = el("div", { class: "side-by-side" });
  if (original) {
    wrap.append(el("figure", {}, el("img", { src: original, alt: "The original chart" }),
      el("figcaption", { text: "The original" })));
  }
  wrap.append(el("figure", {}, replot(result), el("figcaption", { text: "Re-plotted from the values read" })));
  const box = el("div", {}, wrap, chartTable(result));
  for (const note of result.notes || []) box.append(el("p", { class: "muted", text: note }));
  return box;
}

function renderTable(result) {
  const box = el("div", {}, dataTable(result.columns || [], result.rows || [], result.title));
  for (const note of result.notes || []) box.append(el("p", { class: "muted", text: note }));
  return box;
}

function renderExtraction(result) {
  const box = el("div");
  if (result.echo) {
    box.append(el("p", { class: "error", text: "The answer repeats the template's example values: most likely none of the fields is in the image." }));
  }
  box.append(jsonTree(result.data, result.confidence));
  if (result.confidence) box.append(confidenceLegend());
  if ((result.errors || []).length) {
    box.append(el("p", { class: "muted", text: `Earlier attempts failed: ${result.errors.join("; ")}` }));
  }
  return box;
}

/** The result's view, chosen by its type name (from GET /v1/tasks); JSON for unknown types. */
export function renderResult(type, result, original) {
  switch (type) {
    case "OCRResult": return renderOCR(result);
    case "ChartData": return renderChart(result, original);
    case "TableData": return renderTable(result);
    case "ExtractionResult": return renderExtraction(result);
    case "DocumentExtractionResult": return renderExtraction(result);
    case "Answer": return textBlock(result.text);
    case "HTMLResult": return textBlock(result.html);
    default:
      return el("pre", { class: "code", tabindex: 0, text: JSON.stringify(result, null, 2) });
  }
}

const STAGES = ["queue", "preprocess", "vision", "prefill", "decode", "parse", "total"];

/** Timings, tiles, tokens and cache use of a result's metadata, plus what the page measured. */
export function renderMeta(meta, measured) {
  const rows = [];
  if (meta) {
    rows.push(["Model", `${meta.model} (${meta.engine})`]);
    if (meta.origin && meta.origin !== "model") rows.push(["Answered by", meta.origin]);
    rows.push(["Tiles", String(meta.tiles)]);
    rows.push(["Tokens", `${meta.prompt_tokens} in, ${meta.new_tokens} out`]);
    rows.push(["Vision cache", meta.cache_hit ? "hit" : "miss"]);
    if (meta.finish_reason) rows.push(["Finish", meta.finish_reason]);
    if (meta.attempts > 1) rows.push(["Attempts", String(meta.attempts)]);
    const timings = meta.timings || {};
    for (const stage of [...STAGES, ...Object.keys(timings).filter((s) => !STAGES.includes(s))]) {
      if (stage in timings) rows.push([`Time: ${stage}`, `${(timings[stage] * 1000).toFixed(1)} ms`]);
    }
  }
  if (measured.firstText !== undefined) rows.push(["First text after", `${measured.firstText.toFixed(0)} ms`]);
  rows.push(["Round trip", `${measured.total.toFixed(0)} ms`]);
  const table = el("table", { id: "timings", "aria-label": "How the result was produced" });
  for (const [name, value] of rows) table.append(el("tr", {}, el("th", { scope: "row", text: name }), el("td", { text: value })));
  return table;
}

/** Rectangles over the preview: regions [x0, y0, x1, y1] in units of size [width, height]. */
export function drawRegions(layer, regions, [width, height]) {
  layer.replaceChildren();
  if (!width || !height) return;
  for (const [x0, y0, x1, y1] of regions) {
    layer.append(el("div", {
      class: "box",
      "data-region": [x0, y0, x1, y1].join(","),
      style: {
        left: `${(100 * x0) / width}%`,
        top: `${(100 * y0) / height}%`,
        width: `${(100 * (x1 - x0)) / width}%`,
        height: `${(100 * (y1 - y0)) / height}%`,
      },
    }));
  }
}
