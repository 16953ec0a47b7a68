// The run page's neuron table (filters, search, sorting and paging through /api/neurons) and
// the probes of your own text (POST /api/probe) on the run and neuron pages. Every value is
// written as text (never as HTML).
"use strict";

async function probe(run, request, status) {
  status.textContent = "running the model...";
  const response = await fetch("/api/probe?" + new URLSearchParams({ run: run }), {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify(request) });
  const data = await response.json();
  if (!response.ok) {
    status.textContent = "cannot probe: " +
      (typeof data.detail === "string" ? data.detail : "check the text");
    return null;
  }
  status.textContent = `${data.tokens.length} tokens`;
  return data;
}

function neuronLink(run, layer, neuron) {
  return "/neuron?" + new URLSearchParams({ run: run, layer: layer, neuron: neuron });
}

(function () {  // a neuron page: its activation at every token of your text
  const form = document.getElementById("neuron-probe");
  if (!form) return;
  const status = document.getElementById("probe-status");
  const out = document.getElementById("probed");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const d = form.dataset;
    const data = await probe(d.run, { text: new FormData(form).get("text"), point: d.point,
      layer: Number(d.layer), neuron: Number(d.neuron) }, status);
    if (!data) return;
    const scale = Number(d.max);
    out.replaceChildren();
    data.tokens.forEach((token, i) => {
      const span = document.createElement("span");
      const act = data.acts[i];
      span.className = "tok";
      span.textContent = token;
      span.title = act.toFixed(4);
      span.dataset.act = act;
      const level = scale > 0 ? Math.min(1, Math.max(0, act / scale)) : 0;
      span.style.background = `rgba(255,0,0,${level.toFixed(3)})`;
      out.appendChild(span);
    });
  });
})();

function cell(row, text, href) {
  const td = row.insertCell();
  if (href) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    td.appendChild(a);
  } else {
    td.textContent = text;
  }
  return td;
}

function number(value, digits) {
  return value === null ? "" : value.toFixed(digits);
}

// Clicking a column sorts by it: numeric columns start descending, the same column flips.
function sortBy(state, key) {
  const numeric = !["explanation", "layer", "neuron"].includes(key);
  state.order = state.sort === key ? (state.order === "asc" ? "desc" : "asc")
    : (numeric ? "desc" : "asc");
  state.sort = key;
  state.offset = 0;
}

// The previous and next buttons move a page through the query's results.
function bindPager(state, refresh) {
  document.getElementById("prev").addEventListener("click", () => {
    state.offset = Math.max(0, state.offset - state.limit);
    refresh();
  });
  document.getElementById("next").addEventListener("click", () => {
    state.offset += state.limit;
    refresh();
  });
}

(function () {  // a run page (one table) or a comparison (two): the same query on each
  const tables = [...document.querySelectorAll("table.neurons[data-run]")];
  if (!tables.length) return;
  const form = document.getElementById("filters");
  const state = { sort: "layer", order: "asc", offset: 0, limit: 50 };
  let more = false;

  function params(run) {
    const query = new URLSearchParams({ run: run, sort: state.sort, order: state.order,
                                        limit: state.limit, offset: state.offset });
    for (const [name, value] of new FormData(form)) {
      if (value !== "") query.set(name, value);
    }
    return query;
  }

  async function loadOne(table) {
    const run = table.dataset.run;
    const status = document.getElementById(table.dataset.status);
    status.textContent = "loading...";
    const response = await fetch("/api/neurons?" + params(run));
    const data = await response.json();
    if (!response.ok) {
      const detail = typeof data.detail === "string" ? data.detail : "check the filters";
      status.textContent = "cannot search: " + detail;
      return false;
    }
    const body = table.tBodies[0];
    body.replaceChildren();
    for (const n of data.neurons) {
      const row = body.insertRow();
      cell(row, String(n.layer));
      cell(row, String(n.neuron), neuronLink(run, n.layer, n.neuron));
      cell(row, number(n.max, 3));
      cell(row, number(n.firing, 4));
      cell(row, number(n.kurtosis, 1));
      cell(row, n.interpretable === null ? "" : (n.interpretable ? "yes" : "no"));
      cell(row, number(n.auroc, 3));
      cell(row, n.explanation);
    }
    const last = Math.min(state.offset + state.limit, data.total);
    status.textContent = data.total === 0 ? "no neuron matches" :
      `neurons ${state.offset + 1}-${last} of ${data.total.toLocaleString()}`;
    for (const th of table.tHead.rows[0].cells) {
      th.className = th.dataset.sort === state.sort ? state.order : "";
    }
    return last < data.total;
  }

  async function load() {
    more = (await Promise.all(tables.map(loadOne))).some(Boolean);
    document.getElementById("prev").disabled = state.offset === 0;
    document.getElementById("next").disabled = !more;
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    state.offset = 0;
    load();
  });
  for (const table of tables) {
    for (const th of table.tHead.rows[0].cells) {
      th.addEventListener("click", () => { sortBy(state, th.dataset.sort); load(); });
    }
  }
  bindPager(state, load);
  load();
})();

(function () {  // a run page's probe of your text
  const probeForm = document.getElementById("probe");
  if (!probeForm) return;
  const run = probeForm.dataset.run;
  const probed = document.getElementById("probed");
  probeForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const fields = new FormData(probeForm);
    const data = await probe(run, { text: fields.get("text"), point: fields.get("point") },
      document.getElementById("probe-status"));
    if (!data) return;
    probed.replaceChildren();
    data.tokens.forEach((token, i) => {
      const row = probed.insertRow();
      cell(row, JSON.stringify(token));
      const neurons = row.insertCell();
      for (const n of data.top[i]) {
        const a = document.createElement("a");
        a.href = neuronLink(run, n.layer, n.neuron);
        a.textContent = `L${n.layer} N${n.neuron} ${n.act >= 0 ? "+" : ""}${n.act.toFixed(3)}`;
        neurons.appendChild(a);
        neurons.appendChild(document.createTextNode("  "));
      }
    });
  });
})();

// The static site (`solulab site`): data arrives as scripts calling solulabData, and the table
// is searched, sorted and paged in the page.
const solulabStatic = {};
window.solulabData = function (kind, payload) {
  solulabStatic[kind] = payload;
  if (kind.startsWith("L")) staticNeuron();
};

function staticTable() {
  const data = solulabStatic.table;
  const table = document.getElementById("neurons");
  const form = document.getElementById("filters");
  const status = document.getElementById("status");
  const c = data.columns;
  const rows = c.layer.length;
  const lowered = data.explanations.map((e) => e.toLowerCase());
  const state = { sort: "layer", order: "asc", offset: 0, limit: 50 };
  const labels = [["layer", "layer"], ["neuron", "neuron"], ["max", "max"],
    ["firing", "firing"], ["kurtosis", "kurtosis"], ["interpretable", "verdict"],
    ["auroc", "AUROC"], ["explanation", "explanation"]];
  document.getElementById("title").textContent = data.run;
  document.getElementById("about").textContent = `${data.act_fn}, ${data.layers.length} layers ` +
    `of ${data.d_mlp} neurons, collected over ${data.n_tokens.toLocaleString()} tokens.`;
  for (const layer of data.layers) form.layer.add(new Option("layer " + layer, layer));
  const head = table.tHead.rows[0];
  for (const [key, label] of labels) {
    const th = document.createElement("th");
    th.dataset.sort = key;
    th.textContent = label;
    head.appendChild(th);
  }
  const value = (key, i) => key === "explanation" ? (lowered[i] || null) :
    (key === "interpretable" ? (c[key][i] < 0 ? null : c[key][i]) : c[key][i]);

  function render() {
    const fields = new FormData(form);
    const q = (fields.get("q") || "").toLowerCase();
    const layer = fields.get("layer");
    const verdict = fields.get("interpretable");
    const picked = [];
    for (let i = 0; i < rows; i++) {
      if (layer !== "" && c.layer[i] !== Number(layer)) continue;
      if (verdict !== "" && c.interpretable[i] !== (verdict === "true" ? 1 : 0)) continue;
      if (q && !lowered[i].includes(q)) continue;
      picked.push(i);
    }
    const sign = state.order === "asc" ? 1 : -1;
    picked.sort((a, b) => {
      const va = value(state.sort, a), vb = value(state.sort, b);
      if (va === null || vb === null) return (va === null) - (vb === null) || a - b;
      return (va < vb ? -sign : va > vb ? sign : 0) || a - b;
    });
    const body = table.tBodies[0];
    body.replaceChildren();
    for (const i of picked.slice(state.offset, state.offset + state.limit)) {
      const row = body.insertRow();
      const link = "neuron.html?" + new URLSearchParams({ layer: c.layer[i], neuron: c.neuron[i] });
      const cells = [String(c.layer[i]), String(c.neuron[i]), c.max[i]?.toFixed(3),
        c.firing[i]?.toFixed(4), c.kurtosis[i]?.toFixed(1),
        c.interpretable[i] < 0 ? "" : (c.interpretable[i] ? "yes" : "no"),
        c.auroc[i]?.toFixed(3), data.explanations[i]];
      cells.forEach((text, k) => {
        const td = row.insertCell();
        if (k === 1) {
          const a = document.createElement("a");
          a.href = link;
          a.textContent = text;
          td.appendChild(a);
        } else {
          td.textContent = text ?? "";
        }
      });
    }
    const last = Math.min(state.offset + state.limit, picked.length);
    status.textContent = picked.length === 0 ? "no neuron matches" :
      `neurons ${state.offset + 1}-${last} of ${picked.length.toLocaleString()}`;
    document.getElementById("prev").disabled = state.offset === 0;
    document.getElementById("next").disabled = last >= picked.length;
    for (const th of head.cells) th.className = th.dataset.sort === state.sort ? state.order : "";
  }

  form.addEventListener("submit", (event) => { event.preventDefault(); state.offset = 0; render(); });
  for (const th of head.cells) {
    th.addEventListener("click", () => { sortBy(state, th.dataset.sort); render(); });
  }
  bindPager(state, render);
  render();
}

function staticNeuron() {
  const box = document.getElementById("static-neuron");
  const params = new URLSearchParams(location.search);
  const layer = Number(params.get("layer")), neuron = Number(params.get("neuron"));
  const first = Math.floor(neuron / Number(box.dataset.shard)) * Number(box.dataset.shard);
  const key = `L${layer}-${first}`;
  if (!solulabStatic[key]) {
    if (!solulabStatic.requested) {
      solulabStatic.requested = true;
      const script = document.createElement("script");
      script.src = `shards/${key}.js`;
      script.onerror = () => { box.textContent = "no such neuron in this site"; };
      document.body.appendChild(script);
    }
    return;
  }
  const n = solulabStatic[key][neuron - first];
  if (!n) { box.textContent = "no such neuron in this site"; return; }
  const vocab = solulabStatic.vocab;
  const before = Number(box.dataset.before);
  box.replaceChildren();
  const title = document.createElement("h1");
  title.textContent = `layer ${layer}, neuron ${neuron}`;
  const stats = document.createElement("p");
  stats.className = "stats";
  const [max, , mean, std, kurtosis, positive, above] = n.stats;
  stats.textContent = `max ${max?.toFixed(3)} · mean ${mean?.toFixed(4)} · std ` +
    `${std?.toFixed(4)} · kurtosis ${kurtosis?.toFixed(1)} · above 0: ` +
    `${(100 * positive).toFixed(1)}% · above threshold: ${(100 * above).toFixed(2)}%`;
  const verdict = document.createElement("p");
  verdict.textContent = n.verdict === null ? "not explained" :
    `${n.verdict ? "INTERPRETABLE" : "NOT INTERPRETABLE"}: ${n.explanation}`;
  const heading = document.createElement("h2");
  heading.textContent = "Top activations";
  const examples = document.createElement("div");
  examples.id = "top";
  for (const [value, ids, acts] of n.examples) {
    const line = document.createElement("div");
    line.className = "example";
    const label = document.createElement("span");
    label.className = "value";
    label.textContent = (value >= 0 ? "+" : "") + value.toFixed(3) + " ";
    line.appendChild(label);
    ids.forEach((id, i) => {
      if (id < 0) return;
      const span = document.createElement("span");
      span.className = "tok" + (i === before ? " fire" : "");
      span.textContent = vocab[id] ?? "?";
      const act = acts[i] ?? 0;
      span.dataset.act = act;
      span.title = act.toFixed(3);
      const level = max > 0 ? Math.min(1, Math.max(0, act / max)) : 0;
      span.style.background = `rgba(255,0,0,${level.toFixed(3)})`;
      line.appendChild(span);
    });
    examples.appendChild(line);
  }
  box.append(title, stats, verdict, heading, examples);
}

document.addEventListener("DOMContentLoaded", () => {
  if (solulabStatic.table) staticTable();
  if (document.getElementById("static-neuron")) staticNeuron();
});
