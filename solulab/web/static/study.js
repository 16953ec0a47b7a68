"use strict";
const token = location.pathname.split("/").pop();
const api = (path) => `/api/study/${token}${path}`;
const $ = (id) => document.getElementById(id);
let items = [], index = 0, finished = false;

// Bidirectional controls in corpus text would reorder the page: each is shown as a mark.
const BIDI = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
const mark = (c) => `⟦U+${c.charCodeAt(0).toString(16).toUpperCase().padStart(4, "0")}⟧`;

function esc(text) {
  const span = document.createElement("span");
  span.textContent = text.replace(BIDI, mark);
  return span.innerHTML;
}

const SHADING = {
  rank: "The tokens where the neuron fires most strongly are shaded red, darker the stronger. " +
        "Every neuron shows the same amount of shading (its strongest tenth of the tokens " +
        "below), so the shading shows where a neuron fires most, not how often it fires.",
  plain: "Each token is shaded red by how strongly the neuron fires on it.",
};

function snippetHtml(snippet, shaded) {
  const start = snippet.start ? '<span class="start">⟨start⟩</span>' : "";
  return start + snippet.tokens.map((tok, i) => {
    const a = shaded ? snippet.acts[i] : 0;
    const fire = i === snippet.fire ? " fire" : "";
    const text = esc(tok).replace(/\n/g, "⏎").replace(/\t/g, "→").replace(/\r/g, "␍") ||
      "&nbsp;";
    const shade = shaded ? ` data-act="${a}" title="${a}" style="background: rgba(255,0,0,${a})"`
                         : "";
    return `<span class="tok${fire}"${shade}>${text}</span>`;
  }).join("");
}

function say(text) { $("status").textContent = text; }

async function call(method, path, body) {
  const response = await fetch(api(path), {
    method, headers: {"Content-Type": "application/json"},
    body: body === undefined ? undefined : JSON.stringify(body)});
  if (!response.ok) {
    const detail = (await response.json().catch(() => ({}))).detail;
    say(`error: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
    throw new Error(response.status);
  }
  return response.json();
}

function showProgress() {
  const done = items.filter((it) => it.label).length;
  $("progress").textContent = `Neuron ${index + 1} of ${items.length} · ${done} rated`;
  $("finishing").hidden = finished || done < items.length;
}

async function show(i) {
  index = Math.max(0, Math.min(i, items.length - 1));
  const item = await call("GET", `/items/${items[index].id}`);
  $("snippets").innerHTML = item.snippets.filter((s) => s.tokens.length)
    .map((s) => `<div class="snippet">${snippetHtml(s, true)}</div>`).join("");
  $("hypothesis").value = item.hypothesis || "";
  $("yes").classList.toggle("chosen", item.label === "interpretable");
  $("no").classList.toggle("chosen", item.label === "not_interpretable");
  showProgress();
}

async function rate(label) {
  if (finished) return;
  const hypothesis = $("hypothesis").value;
  if (label === "interpretable" && !hypothesis.trim()) {
    say("An interpretable neuron needs its hypothesis: write the rule first.");
    $("hypothesis").focus();
    return;
  }
  const saved = await call("PUT", `/ratings/${items[index].id}`, {label, hypothesis});
  items[index].label = label;
  say(`saved neuron ${index + 1} (revision ${saved.revision})`);
  const next = items.findIndex((it, j) => j > index && !it.label);
  const unrated = items.findIndex((it) => !it.label);
  await show(next >= 0 ? next : unrated >= 0 ? unrated : index);
}

async function finish() {
  await call("POST", "/finish");
  finished = true;
  $("rating").hidden = true;
  $("finishing").hidden = true;
  await loadChecks();
}

function showDone() {
  const open = document.querySelectorAll(".check:not([data-done])").length;
  $("done").hidden = !finished || open > 0;
}

async function loadChecks() {
  const data = await call("GET", "/checks");
  $("checks").hidden = !data.open || !data.groups.length;
  $("groups").innerHTML = data.groups.map((g) =>
    `<h3>Your hypothesis: ${esc(g.hypothesis)}</h3>` + g.checks.map((c) =>
      `<div class="snippet check" data-id="${esc(c.id)}"` +
      `${c.consistent === null ? "" : ' data-done="1"'}>` +
      `<button class="c${c.consistent === true ? " chosen" : ""}">consistent</button>` +
      `<button class="x${c.consistent === false ? " chosen" : ""}">inconsistent</button> ` +
      `${snippetHtml(c, false)}</div>`).join("")).join("");
  for (const row of document.querySelectorAll(".check")) {
    row.querySelector(".c").onclick = () => label(row, true);
    row.querySelector(".x").onclick = () => label(row, false);
  }
  showDone();
}

async function label(row, consistent) {
  await call("PUT", `/checks/${row.dataset.id}`, {consistent});
  row.querySelector(".c").classList.toggle("chosen", consistent);
  row.querySelector(".x").classList.toggle("chosen", !consistent);
  row.dataset.done = "1";
  say(`saved example (${consistent ? "consistent" : "inconsistent"})`);
  showDone();
}

$("yes").onclick = () => rate("interpretable");
$("no").onclick = () => rate("not_interpretable");
$("back").onclick = () => show(index - 1);
$("forward").onclick = () => show(index + 1);
$("finish").onclick = finish;
document.addEventListener("keydown", (event) => {
  if (event.target.tagName === "TEXTAREA") return;
  if (!finished && event.key === "i") rate("interpretable");
  else if (!finished && event.key === "n") rate("not_interpretable");
  else if (!finished && event.key === "ArrowLeft") show(index - 1);
  else if (!finished && event.key === "ArrowRight") show(index + 1);
  else if (finished && (event.key === "c" || event.key === "x")) {
    const row = document.querySelector(".check:not([data-done])");
    if (row) label(row, event.key === "c");
  }
});

(async () => {
  const list = await call("GET", "/items");
  items = list.items;
  finished = list.finished;
  $("shading").textContent = SHADING[list.display] || "";
  if (finished) {
    $("rating").hidden = true;
    $("progress").textContent = `${items.length} neurons rated`;
    await loadChecks();
  } else {
    const first = items.findIndex((it) => !it.label);
    await show(first >= 0 ? first : 0);
  }
})();
