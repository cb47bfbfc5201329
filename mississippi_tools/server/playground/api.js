// Calls to this server: the API key, JSON and multipart requests, and the task stream.
// Every URL is relative to the page's own origin; the page never reaches another host.

const KEY_ITEM = "mississippi-tools.api-key";

export function storedKey() {
  return sessionStorage.getItem(KEY_ITEM);
}

export function storeKey(key) {
  if (key) sessionStorage.setItem(KEY_ITEM, key);
  else sessionStorage.removeItem(KEY_ITEM);
}

export function serverNeedsKey() {
  return document.body.dataset.auth === "bearer";
}

/** An error the server answered with: its status and its typed body ({code, message, ...}). */
export class ServerError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || (status ? `http_${status}` : "network_error");
    this.type = error.type || "";
    this.details = error;
  }
}

function headers(extra = {}) {
  const all = { ...extra };
  const key = storedKey();
  if (key) all.Authorization = `Bearer ${key}`;
  return all;
}

async function failure(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = { error: { message: `${response.status} ${response.statusText}` } };
  }
  return new ServerError(response.status, body);
}

async function send(path, options) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ServerError(0, { error: { code: "network_error", message: `the server did not answer (${e.message})` } });
  }
  if (!response.ok) throw await failure(response);
  return response;
}

export async function getJSON(path) {
  const response = await send(path, { headers: headers({ Accept: "application/json" }) });
  return response.json();
}

/** Health without the key (the route is open): {status, model, ...} whatever the status code. */
export async function health() {
  try {
    const response = await fetch("/health", { headers: { Accept: "application/json" } });
    return await response.json();
  } catch (e) {
    return { status: "unreachable", error: { message: e.message } };
  }
}

export async function postForm(path, form, signal) {
  const response = await send(path, { method: "POST", body: form, headers: headers(), signal });
  return response;
}

/**
 * Run a task with "stream": true and call back on each event.
 * onDelta(text), onRetry(attempt); resolves with the result, or throws a ServerError.
 */
export async function streamTask(route, form, { signal, onDelta, onRetry }) {
  const response = await postForm(route, form, signal);
  const type = response.headers.get("content-type") || "";
  if (!type.startsWith("text/event-stream")) return response.json();
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let result;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, ""))
        .join("\n");
      if (!data || data === "[DONE]") continue;
      const event = JSON.parse(data);
      if ("delta" in event) onDelta(event.delta);
      else if ("retry" in event) onRetry(event.retry.attempt);
      else if ("result" in event) result = event.result;
      else if ("error" in event) throw new ServerError(event.status || 500, event);
    }
  }
  if (result === undefined) {
    throw new ServerError(0, { error: { code: "stream_ended", message: "the stream ended without a result" } });
  }
  return result;
}
