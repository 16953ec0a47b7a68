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

(function () {  // a run page: the neuron table and the probe
  const table = document.getElementById("neurons");
  if (!table) return;
  const run = table.dataset.run;
  const form = document.getElementById("filters");
  const status = document.getElementById("status");
  const state = { sort: "layer", order: "asc", offset: 0, limit: 50 };

  function number(value, digits) {
    return value === null ? "" : value.toFixed(digits);
  }

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

  function params() {
    const query = new URLSearchParams({ run: run, sort: state.sort, order: state.order,
                                        limit: state.limit, offset: state.offset });
    for (const [name, value] of new FormData(form)) {
      if (value !== "") query.set(name, value);
    }
    return query;
  }

  async function load() {
    status.textContent = "loading...";
    const response = await fetch("/api/neurons?" + params());
    const data = await response.json();
    if (!response.ok) {
      const detail = typeof data.detail === "string" ? data.detail : "check the filters";
      status.textContent = "cannot search: " + detail;
      return;
    }
    const body = table.tBodies[0];
    body.replaceChildren();
    for (const n of data.neurons) {
      const row = body.insertRow();
      const link = neuronLink(run, n.layer, n.neuron);
      cell(row, String(n.layer));
      cell(row, String(n.neuron), link);
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
    document.getElementById("prev").disabled = state.offset === 0;
    document.getElementById("next").disabled = last >= data.total;
    for (const th of table.tHead.rows[0].cells) {
      th.className = th.dataset.sort === state.sort ? state.order : "";
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    state.offset = 0;
    load();
  });
  for (const th of table.tHead.rows[0].cells) {
    th.addEventListener("click", () => {
      const numeric = th.dataset.sort !== "explanation" && th.dataset.sort !== "layer" &&
        th.dataset.sort !== "neuron";
      state.order = state.sort === th.dataset.sort ? (state.order === "asc" ? "desc" : "asc")
        : (numeric ? "desc" : "asc");
      state.sort = th.dataset.sort;
      state.offset = 0;
      load();
    });
  }
  document.getElementById("prev").addEventListener("click", () => {
    state.offset = Math.max(0, state.offset - state.limit);
    load();
  });
  document.getElementById("next").addEventListener("click", () => {
    state.offset += state.limit;
    load();
  });
  load();

  const probeForm = document.getElementById("probe");
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
