"use strict";
const token = location.pathname.split("/").pop();
const api = (path) => `/api/study/${token}${path}`;
let items = [], index = 0, shownAt = Date.now();

function esc(text) {
  const span = document.createElement("span");
  span.textContent = text;
  return span.innerHTML;
}

function snippetHtml(snippet) {
  return snippet.tokens.map((tok, i) => {
    const a = snippet.acts.length ? snippet.acts[i] : 0;
    const fire = i === snippet.fire ? " fire" : "";
    const text = esc(tok).replace(/\n/g, "⏎").replace(/\t/g, "→") || "&nbsp;";
    return `<span class="tok${fire}" data-act="${a}" title="${a}" ` +
           `style="background: rgba(255,0,0,${a})">${text}</span>`;
  }).join("");
}

async function call(method, path, body) {
  const response = await fetch(api(path), {
    method, headers: {"Content-Type": "application/json"},
    body: body === undefined ? undefined : JSON.stringify(body)});
  if (!response.ok) {
    const detail = (await response.json().catch(() => ({}))).detail;
    document.getElementById("status").textContent = `error: ${JSON.stringify(detail)}`;
    throw new Error(response.status);
  }
  return response.json();
}

async function show(i) {
  index = Math.max(0, Math.min(i, items.length - 1));
  const item = await call("GET", `/items/${items[index].id}`);
  document.getElementById("snippets").innerHTML = item.snippets
    .filter((s) => s.tokens.length)
    .map((s) => `<div class="snippet">${snippetHtml(s)}</div>`).join("");
  document.getElementById("hypothesis").value = item.hypothesis || "";
  document.getElementById("yes").classList.toggle("chosen", item.label === "interpretable");
  document.getElementById("no").classList.toggle("chosen", item.label === "not_interpretable");
  const done = items.filter((it) => it.label).length;
  document.getElementById("progress").textContent =
    `Neuron ${index + 1} of ${items.length} · ${done} rated`;
  shownAt = Date.now();
}

async function rate(label) {
  const hypothesis = document.getElementById("hypothesis").value;
  const seconds = (Date.now() - shownAt) / 1000;
  await call("PUT", `/ratings/${items[index].id}`, {label, hypothesis, seconds});
  items[index].label = label;
  document.getElementById("status").textContent = `saved neuron ${index + 1}`;
  const next = items.findIndex((it, j) => j > index && !it.label);
  if (next >= 0) await show(next);
  else if (items.every((it) => it.label)) await loadChecks();
  else await show(index);
}

async function loadChecks() {
  const data = await call("GET", "/checks");
  if (!data.open || !data.groups.length) return;
  document.getElementById("checks").hidden = false;
  document.getElementById("groups").innerHTML = data.groups.map((g) =>
    `<h3>Hypothesis: ${esc(g.hypothesis)}</h3>` + g.checks.map((c) =>
      `<div class="snippet check" data-id="${c.id}">` +
      `<button class="c${c.consistent === true ? " chosen" : ""}">consistent</button>` +
      `<button class="x${c.consistent === false ? " chosen" : ""}">inconsistent</button> ` +
      `${snippetHtml(c)}</div>`).join("")).join("");
  for (const row of document.querySelectorAll(".check")) {
    row.querySelector(".c").onclick = () => label(row, true);
    row.querySelector(".x").onclick = () => label(row, false);
  }
}

async function label(row, consistent) {
  await call("PUT", `/checks/${row.dataset.id}`, {consistent});
  row.querySelector(".c").classList.toggle("chosen", consistent);
  row.querySelector(".x").classList.toggle("chosen", !consistent);
  row.dataset.done = "1";
}

document.getElementById("yes").onclick = () => rate("interpretable");
document.getElementById("no").onclick = () => rate("not_interpretable");
document.getElementById("back").onclick = () => show(index - 1);
document.getElementById("forward").onclick = () => show(index + 1);
document.addEventListener("keydown", (event) => {
  if (event.target.tagName === "TEXTAREA") return;
  if (event.key === "i") rate("interpretable");
  else if (event.key === "n") rate("not_interpretable");
  else if (event.key === "ArrowLeft") show(index - 1);
  else if (event.key === "ArrowRight") show(index + 1);
  else if (event.key === "c" || event.key === "x") {
    const row = document.querySelector(".check:not([data-done])");
    if (row) label(row, event.key === "c");
  }
});

(async () => {
  items = (await call("GET", "/items")).items;
  const first = items.findIndex((it) => !it.label);
  await show(first >= 0 ? first : 0);
  if (first < 0) await loadChecks();
})();
