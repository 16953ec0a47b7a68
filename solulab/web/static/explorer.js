// The run page's neuron table: filters, search, sorting and paging through /api/neurons.
// Every value is written as text (never as HTML).
"use strict";
(function () {
  const table = document.getElementById("neurons");
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
      const link = "/neuron?" + new URLSearchParams({ run: run, layer: n.layer, neuron: n.neuron });
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
})();
