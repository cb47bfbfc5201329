// The call the page makes, written as curl and as Python (httpx), without streaming.
// The API key is read from MISSISSIPPI_API_KEY in both: it is never copied into the text.

function shellQuote(text) {
  return `'${String(text).replaceAll("'", `'\\''`)}'`;
}

function pythonString(text) {
  return JSON.stringify(String(text)); // a JSON string literal is a valid Python str literal
}

/**
 * call: {url, fileName, fields: [[name, text]], auth}
 * fields hold the form fields as sent (JSON text for objects), image excluded.
 */
export function curlSnippet(call) {
  const lines = [`curl -sS ${shellQuote(call.url)}`];
  if (call.auth) lines.push(`-H "Authorization: Bearer $MISSISSIPPI_API_KEY"`);
  if (call.fileName) lines.push(`-F ${shellQuote(`image=@"${call.fileName.replaceAll('"', "")}"`)}`);
  for (const [name, text] of call.fields) lines.push(`--form-string ${shellQuote(`${name}=${text}`)}`);
  return lines.join(" \\\n  ");
}

export function pythonSnippet(call) {
  const out = ["import os", "", "import httpx", ""];
  const indent = call.fileName ? "    " : "";
  const args = [`${indent}    ${pythonString(call.url)},`];
  if (call.auth) {
    args.push(`${indent}    headers={"Authorization": "Bearer " + os.environ["MISSISSIPPI_API_KEY"]},`);
  }
  if (call.fileName) args.push(`${indent}    files={"image": (${pythonString(call.fileName)}, image)},`);
  if (call.fields.length) {
    args.push(`${indent}    data={`);
    for (const [name, text] of call.fields) args.push(`${indent}        ${pythonString(name)}: ${pythonString(text)},`);
    args.push(`${indent}    },`);
  }
  args.push(`${indent}    timeout=300,`);
  if (call.fileName) {
    out.push(`with open(${pythonString(call.fileName)}, "rb") as image:`);
    out.push(`    response = httpx.post(`, ...args, "    )");
  } else {
    out.push("response = httpx.post(", ...args, ")");
  }
  out.push("response.raise_for_status()  # errors: response.json()[\"error\"] has code and message");
  out.push("print(response.json())");
  if (out[0] === "import os" && !call.auth) out.splice(0, 2);
  return out.join("\n");
}
