// The playground page: pick an image or a PDF page, choose a served task, run it, see the result.
import { ServerError, getJSON, health, postForm, serverNeedsKey, storeKey, storedKey, streamTask } from "./api.js";
import { drawRegions, el, renderMeta, renderResult } from "./render.js";
import { curlSnippet, pythonSnippet } from "./snippets.js";

const $ = (id) => document.getElementById(id);

const state = {
  tasks: [],
  file: null,
  isDocument: false,
  pageCount: 0,
  preview: null, // URL of the image shown (a blob: URL or a page thumbnail's data: URI)
  controller: null,
  afterKey: null,
};

const EXAMPLES = {
  "Invoice template": { invoice_number: "", date: "", total: 0.0, paid: false },
  "Invoice JSON Schema": {
    type: "object",
    properties: {
      invoice_number: { type: "string" },
      date: { type: "string", format: "date" },
      total: { type: "number" },
      paid: { type: "boolean" },
    },
    required: ["invoice_number", "date", "total", "paid"],
  },
};

// -- API key -------------------------------------------------------------------------------

function askForKey(reason, then) {
  state.afterKey = then;
  $("key-why").textContent = reason ||
    "This server needs an API key. It is kept in this tab only (sessionStorage) and sent as Authorization: Bearer ….";
  $("api-key").value = "";
  if (!$("key-dialog").open) $("key-dialog").showModal();
  $("api-key").focus();
}

function setupKeyDialog() {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (!key) {
      $("api-key").setAttribute("aria-invalid", "true");
      return;
    }
    $("api-key").removeAttribute("aria-invalid");
    storeKey(key);
    $("key-dialog").close();
    $("change-key").hidden = false;
    const then = state.afterKey;
    state.afterKey = null;
    if (then) then();
    updateSnippets();
  });
  $("key-cancel").addEventListener("click", () => $("key-dialog").close());
  $("change-key").addEventListener("click", () => askForKey("Enter the API key to use from now on.", loadTasks));
  $("change-key").hidden = !serverNeedsKey();
}

/** Run a call; a 401 asks for the key (with the server's message) and runs it again. */
async function withKey(call) {
  try {
    return await call();
  } catch (error) {
    if (error instanceof ServerError && error.status === 401) {
      storeKey(null);
      return new Promise((resolve, reject) => {
        askForKey(`${error.message}`, () => withKey(call).then(resolve, reject));
      });
    }
    throw error;
  }
}

// -- server status and tasks ---------------------------------------------------------------

async function watchHealth() {
  const body = await health();
  if (body.status === "ok") {
    $("server-status").textContent = `Model ${body.model} ready (${body.engine} engine)`;
    return;
  }
  const why = body.error ? `: ${body.error.code || ""} ${body.error.message}` : "";
  $("server-status").textContent = `Model ${body.status}${why}`;
  if (body.status === "loading") setTimeout(watchHealth, 2000);
}

async function loadTasks() {
  try {
    const catalogue = await withKey(() => getJSON("/v1/tasks"));
    state.tasks = catalogue.data;
  } catch (error) {
    showError(error);
    return;
  }
  const select = $("task");
  const previous = select.value;
  select.replaceChildren(...state.tasks.map((task) => el("option", { value: task.name, text: `${task.title} (${task.name})` })));
  if (state.tasks.some((task) => task.name === previous)) select.value = previous;
  select.disabled = false;
  $("run").disabled = false;
  buildArguments();
}

function currentTask() {
  return state.tasks.find((task) => task.name === $("task").value);
}

// -- the task's arguments, from its JSON Schema --------------------------------------------

function resolve(schema, root) {
  if (schema && schema.$ref) return root.$defs?.[schema.$ref.split("/").pop()] || {};
  return schema || {};
}

function kindOf(property, root) {
  const prop = resolve(property, root);
  if (prop.enum) return { kind: "enum", choices: prop.enum };
  const members = (prop.anyOf || [prop]).map((m) => resolve(m, root)).filter((m) => m.type !== "null");
  const withEnum = members.find((m) => m.enum);
  if (withEnum && members.length === 1) return { kind: "enum", choices: withEnum.enum };
  const types = members.map((m) => m.type);
  if (types.includes("object") || types.includes("array")) return { kind: "json" };
  if (types.length === 1 && ["boolean", "integer", "number"].includes(types[0])) return { kind: types[0] };
  return { kind: "string" };
}

function buildArguments() {
  const task = currentTask();
  const box = $("task-args");
  box.replaceChildren();
  if (!task) return;
  $("task-description").textContent = task.description;
  const schema = task.arguments || {};
  const required = new Set(schema.required || []);
  for (const [name, property] of Object.entries(schema.properties || {})) {
    const { kind, choices } = kindOf(property, schema);
    const id = `arg-${name}`;
    const label = `${property.title || name}${required.has(name) ? " (required)" : ""}`;
    const help = property.description ? el("p", { class: "help", id: `${id}-help`, text: property.description }) : null;
    const field = el("div", { class: kind === "boolean" ? "field check" : "field" });
    const common = {
      id, name, "data-kind": kind, "data-default": JSON.stringify(property.default ?? null),
      "aria-describedby": help ? `${id}-help` : null, required: required.has(name),
    };
    let control;
    if (kind === "boolean") {
      control = el("input", { ...common, type: "checkbox", checked: property.default === true });
      field.append(control, " ", el("label", { for: id, text: label }), help);
    } else {
      if (kind === "enum") {
        control = el("select", common);
        for (const choice of choices) control.append(el("option", { value: choice, text: String(choice) }));
        if (property.default !== undefined && property.default !== null) control.value = property.default;
      } else if (kind === "json") {
        control = el("textarea", { ...common, rows: name === "json_schema" ? 12 : 4, spellcheck: "false" });
        if (name === "json_schema") control.value = JSON.stringify(EXAMPLES["Invoice JSON Schema"], null, 2);
        else if (property.default !== undefined && property.default !== null) control.value = JSON.stringify(property.default);
      } else if (kind === "integer" || kind === "number") {
        control = el("input", { ...common, type: "number", step: kind === "integer" ? "1" : "any", inputmode: "decimal" });
        if (typeof property.default === "number") control.value = property.default;
      } else {
        const long = name === "question" || name === "instructions";
        control = el(long ? "textarea" : "input", { ...common, type: long ? null : "text", rows: long ? 3 : null });
        if (typeof property.default === "string") control.value = property.default;
      }
      field.append(el("label", { for: id, text: label }), control, help);
      if (name === "json_schema") field.append(templateButtons(control));
      if (kind === "json") field.append(el("p", { class: "help", id: `${id}-error`, role: "alert" }));
    }
    box.append(field);
  }
  updateSnippets();
}

function templateButtons(editor) {
  const row = el("div", { class: "template-buttons", role: "group", "aria-label": "Examples for the schema editor" });
  for (const [name, value] of Object.entries(EXAMPLES)) {
    const button = el("button", { type: "button", text: name });
    button.addEventListener("click", () => {
      editor.value = JSON.stringify(value, null, 2);
      editor.dispatchEvent(new Event("input", { bubbles: true }));
    });
    row.append(button);
  }
  const format = el("button", { type: "button", text: "Format JSON" });
  format.addEventListener("click", () => {
    try {
      editor.value = JSON.stringify(JSON.parse(editor.value), null, 2);
    } catch {
      /* the error note says what is wrong */
    }
    editor.dispatchEvent(new Event("input", { bubbles: true }));
  });
  row.append(format);
  return row;
}

/** The fields to send, as [name, text] (JSON text for objects); throws on JSON that does not parse. */
function collectFields({ strict }) {
  const fields = [];
  let bad = null;
  for (const control of $("task-args").querySelectorAll("[data-kind]")) {
    const kind = control.dataset.kind;
    const fallback = JSON.parse(control.dataset.default);
    let text = null;
    if (kind === "boolean") {
      if (control.checked !== (fallback === true)) text = String(control.checked);
    } else if (kind === "json") {
      const note = $(`${control.id}-error`);
      const raw = control.value.trim();
      if (raw) {
        try {
          const value = JSON.parse(raw);
          control.removeAttribute("aria-invalid");
          if (note) note.textContent = "";
          if (JSON.stringify(value) !== JSON.stringify(fallback)) text = JSON.stringify(value);
        } catch (e) {
          control.setAttribute("aria-invalid", "true");
          if (note) note.textContent = `Not valid JSON: ${e.message}`;
          bad = bad || control;
        }
      }
    } else {
      const raw = control.value.trim();
      if (raw && raw !== String(fallback ?? "")) text = raw;
    }
    if (text !== null) fields.push([control.name, text]);
  }
  if (strict && bad) {
    bad.focus();
    throw new ServerError(0, { error: { code: "invalid_json", message: `${bad.name} is not valid JSON; fix it in the editor` } });
  }
  for (const id of ["max_new_tokens", "max_tiles"]) {
    const value = $(id).value.trim();
    if (value) fields.push([id, value]);
  }
  const region = $("region").value.trim();
  if (region) {
    // A form field that is not a plain scalar is JSON text: four numbers as a list, else the
    // text as a JSON string (the server says what is wrong with it).
    const numbers = region.split(",").map((part) => part.trim());
    const numeric = numbers.length === 4 && numbers.every((part) => part !== "" && !Number.isNaN(Number(part)));
    fields.push(["region", numeric ? JSON.stringify(numbers.map(Number)) : JSON.stringify(region)]);
  }
  // A document task reads every page together; the others read the chosen page.
  const task = currentTask();
  if (state.isDocument && task && task.images !== "document") fields.unshift(["page", String(selectedPage())]);
  return fields;
}

// -- the image or PDF ------------------------------------------------------------------------

function selectedPage() {
  return Math.max(1, parseInt($("page-number").value, 10) || 1);
}

function showPreview(url, caption) {
  if (state.preview && state.preview.startsWith("blob:") && state.preview !== url) {
    URL.revokeObjectURL(state.preview); // the previous file's image
  }
  state.preview = url;
  $("preview").src = url;
  $("preview-caption").textContent = caption;
  $("preview-figure").hidden = false;
  $("regions").replaceChildren();
}

function isDocumentFile(file) {
  return /pdf|tiff/i.test(file.type) || /\.(pdf|tiff?)$/i.test(file.name);
}

async function chooseFile(file) {
  if (!file) return;
  state.file = file;
  state.isDocument = isDocumentFile(file);
  $("file-name").textContent = `${file.name} (${Math.ceil(file.size / 1024)} KiB)`;
  $("pages").hidden = true;
  $("page-list").replaceChildren();
  $("result").replaceChildren(); // it showed the previous file
  $("meta").replaceChildren();
  clearError();
  if (!state.isDocument) {
    showPreview(URL.createObjectURL(file), file.name);
  } else {
    $("preview-figure").hidden = true;
    await loadPages(file);
  }
  $("run").disabled = !currentTask();
  updateSnippets();
}

async function loadPages(file) {
  const form = new FormData();
  form.append("image", file, file.name);
  $("run-status").textContent = "Reading the pages…";
  let answer;
  try {
    answer = await withKey(async () => (await postForm("/v1/pages", form)).json());
  } catch (error) {
    showError(error);
    return;
  }
  state.pageCount = answer.count;
  $("page-count").textContent = `(${answer.count} in all)`;
  $("page-number").max = String(answer.count);
  $("page-number").value = "1";
  const list = $("page-list");
  for (const page of answer.pages) {
    const button = el("button", { type: "button", "aria-pressed": page.page === 1 ? "true" : "false", "data-page": page.page, "aria-label": `Page ${page.page}` },
      el("img", { src: page.thumbnail, alt: "" }), el("span", { text: String(page.page) }));
    button.addEventListener("click", () => pickPage(page.page));
    list.append(button);
  }
  $("pages").hidden = false;
  pickPage(1);
  $("run-status").textContent = `${answer.count} page${answer.count === 1 ? "" : "s"}: choose one, then Run.`;
}

function pickPage(number) {
  $("page-number").value = String(number);
  for (const button of $("page-list").querySelectorAll("button")) {
    button.setAttribute("aria-pressed", String(Number(button.dataset.page) === number));
  }
  const thumb = $("page-list").querySelector(`button[data-page="${number}"] img`);
  if (thumb) showPreview(thumb.src, `${state.file.name}, page ${number}`);
  else $("preview-figure").hidden = true;
  updateSnippets();
}

function setupInput() {
  $("file").addEventListener("change", () => chooseFile($("file").files[0]));
  const drop = $("drop");
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const name of ["dragleave", "drop"]) drop.addEventListener(name, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    chooseFile(event.dataTransfer.files[0]);
  });
  $("page-number").addEventListener("change", () => pickPage(selectedPage()));
}

// -- running -----------------------------------------------------------------------------

function clearError() {
  $("error").hidden = true;
  $("error").replaceChildren();
}

function showError(error) {
  if (error.name === "AbortError") {
    $("run-status").textContent = "Stopped.";
    return;
  }
  const box = $("error");
  const details = error.details || {};
  box.dataset.code = error.code || "";
  box.dataset.status = String(error.status ?? "");
  const head = el("p", {}, el("code", { text: `${error.status ? `${error.status} ` : ""}${error.code || "error"}` }), " ", error.message);
  box.replaceChildren(head);
  if (details.param) box.append(el("p", { text: `At: ${details.param}` }));
  for (const item of details.errors || []) box.append(el("p", { text: `• ${item}` }));
  if (details.raw_text) box.append(el("p", { text: "The model's answer:" }), el("pre", { text: details.raw_text }));
  if (details.request_id) box.append(el("p", { class: "muted", text: `Request ${details.request_id}` }));
  box.hidden = false;
  $("run-status").textContent = "Failed.";
}

async function run(event) {
  event.preventDefault();
  const task = currentTask();
  if (!task) return;
  clearError();
  if (!state.file && task.images === "one") {
    showError(new ServerError(0, { error: { code: "no_image", message: "choose an image or a PDF first" } }));
    $("file").focus();
    return;
  }
  let fields;
  try {
    fields = collectFields({ strict: true });
  } catch (error) {
    showError(error);
    return;
  }
  const form = new FormData();
  if (state.file) form.append("image", state.file, state.file.name);
  for (const [name, text] of fields) form.append(name, text);
  const streamed = task.images !== "document"; // a document's pages are read side by side
  if (streamed) form.append("stream", "true");
  $("stream").textContent = "";
  $("result").replaceChildren();
  $("meta").replaceChildren();
  $("raw-json").textContent = "";
  $("run-status").textContent = streamed
    ? `Running ${task.name}…`
    : `Running ${task.name} on every page (the answer comes at the end)…`;
  $("run").disabled = true;
  $("stop").disabled = false;
  state.controller = new AbortController();
  const started = performance.now();
  const measured = {};
  try {
    const result = await withKey(() =>
      streamTask(task.route, form, {
        signal: state.controller.signal,
        onDelta: (text) => {
          if (measured.firstText === undefined) measured.firstText = performance.now() - started;
          $("stream").textContent += text;
        },
        onRetry: (attempt) => {
          $("stream").textContent = "";
          $("run-status").textContent = `Running ${task.name}: attempt ${attempt}…`;
        },
      }),
    );
    measured.total = performance.now() - started;
    showResult(task, result, measured);
  } catch (error) {
    showError(error);
  } finally {
    $("run").disabled = false;
    $("stop").disabled = true;
    state.controller = null;
  }
}

function showResult(task, result, measured) {
  const view = renderResult(task.result, result, state.preview);
  view.id = "result-view";
  view.dataset.type = task.result;
  $("result").replaceChildren(view);
  $("meta").replaceChildren(renderMeta(result.meta, measured));
  $("raw-json").textContent = JSON.stringify(result, null, 2);
  showRegion(result);
  $("run-status").textContent = `Done: ${task.name} in ${(measured.total / 1000).toFixed(2)} s.`;
}

/** Outline the region that was read: the result's pixels on an image; fractions on a page. */
function showRegion(result) {
  const read = result.meta && result.meta.region;
  if (!read || !state.preview) return;
  const preview = $("preview");
  if (!state.isDocument) {
    drawRegions($("regions"), [read], [preview.naturalWidth, preview.naturalHeight]);
    return;
  }
  // A page's pixels are those of its rendering for the model, not of the thumbnail shown:
  // only a region asked for in fractions can be drawn on it.
  const asked = $("region").value.split(",").map(Number);
  if (asked.length === 4 && asked.every((v) => v >= 0 && v <= 1)) drawRegions($("regions"), [asked], [1, 1]);
}

// -- snippets ----------------------------------------------------------------------------

function updateSnippets() {
  const task = currentTask();
  if (!task) return;
  let fields;
  try {
    fields = collectFields({ strict: false });
  } catch {
    return;
  }
  const call = {
    url: new URL(task.route, window.location.origin).href,
    fileName: state.file ? state.file.name : task.images === "many" ? null : "image.png",
    fields,
    auth: serverNeedsKey() || Boolean(storedKey()),
  };
  $("snippet-curl").textContent = curlSnippet(call);
  $("snippet-python").textContent = pythonSnippet(call);
}

async function copy(id) {
  const text = $(id).textContent;
  try {
    await navigator.clipboard.writeText(text);
    $("copy-status").textContent = "Copied.";
  } catch {
    const range = document.createRange();
    range.selectNodeContents($(id));
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    $("copy-status").textContent = "Selected: press Ctrl+C (or ⌘C) to copy.";
  }
}

// -- start -------------------------------------------------------------------------------

function start() {
  setupKeyDialog();
  setupInput();
  $("task").addEventListener("change", () => {
    buildArguments();
    $("run").disabled = !currentTask();
  });
  $("task-form").addEventListener("submit", run);
  $("task-form").addEventListener("input", updateSnippets);
  $("task-form").addEventListener("change", updateSnippets);
  $("stop").addEventListener("click", () => state.controller && state.controller.abort());
  $("copy-curl").addEventListener("click", () => copy("snippet-curl"));
  $("copy-python").addEventListener("click", () => copy("snippet-python"));
  watchHealth();
  if (serverNeedsKey() && !storedKey()) askForKey(null, loadTasks);
  else loadTasks();
}

start();
