// The leanserve dashboard: polls /v2/dashboard/state and /v2/logs/failures and draws them.
// Read-only. Every text from the server goes into the page as text (textContent), never as HTML:
// model names and messages in the failure log come from clients.
"use strict";

(function () {
  const PALETTE = ["#2f6fb3", "#1b7f3b", "#c0392b", "#8e44ad", "#d35400", "#16a085", "#7f8c8d", "#b7950b"];
  const FIELDS_PER_CHART = {
    rate: [["rps", "", []]],
    latency: [["p50_ms", " p50", []], ["p99_ms", " p99", [6, 4]]],
    errors: [["error_rate", "", []]],
    queue: [["compute_ms", " compute", []], ["queue_ms", " queue", [6, 4]]],
  };
  // What tests and curious people can read from the console.
  const dash = (window.leanserveDashboard = { updates: 0, failureUpdates: 0, charts: {}, state: null });
  let pollMs = 2000;
  let chartModels = "";

  // ---- formatting ---------------------------------------------------------------------------

  function bytes(n) {
    if (n === null || n === undefined) return "—";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n.toFixed(0) : n.toFixed(n < 10 ? 1 : 0)) + " " + units[i];
  }
  function ms(v) {
    if (v === null || v === undefined) return "—";
    return (v < 1 ? v.toFixed(2) : v < 10 ? v.toFixed(1) : v.toFixed(0)) + " ms";
  }
  function rate(v) {
    if (v === null || v === undefined) return "—";
    return v < 10 ? v.toFixed(1) : v.toFixed(0);
  }
  function pct(v) {
    if (v === null || v === undefined) return "—";
    return (v * 100).toFixed(v < 0.01 ? 2 : 1) + "%";
  }

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key === "text") node.textContent = value;
      else if (key === "class") node.className = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  async function getJSON(url) {
    const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
    if (response.status === 401 || response.status === 403) {
      window.location.reload(); // the page itself answers with the sign-in form
      throw new Error("signed out");
    }
    if (!response.ok) throw new Error(url + ": " + response.status);
    return response.json();
  }

  // ---- models, memory, batch sizes -------------------------------------------------------------

  function renderMemory(memory) {
    const text = document.getElementById("memory-text");
    const bar = document.getElementById("memory-bar");
    const used = memory.used_bytes;
    if (memory.budget_bytes) {
      const share = Math.min(1, used / memory.budget_bytes);
      text.textContent = bytes(used) + " of " + bytes(memory.budget_bytes) + " budget (" + (share * 100).toFixed(0) +
        "%), process baseline " + bytes(memory.baseline_bytes);
      bar.style.width = (share * 100).toFixed(1) + "%";
      bar.classList.toggle("full", share > 0.9);
    } else {
      text.textContent = bytes(used) + " used by resident models (no budget); process baseline " + bytes(memory.baseline_bytes);
      bar.parentElement.hidden = true; // nothing to fill against
    }
  }

  function renderModels(models) {
    const body = document.querySelector("#models tbody");
    body.replaceChildren();
    models.forEach((m, i) => {
      const versions = el("td", { class: "versions" });
      if (m.error) versions.append(el("div", { class: "reason failed", text: m.error }));
      for (const v of m.versions) {
        const line = el("div", { class: "version " + v.state, "data-state": v.state });
        const isDefault = v.version === m.default_version ? " (default)" : "";
        line.append(el("span", { class: "badge " + v.state, text: "v" + v.version + " " + v.state }));
        line.append(el("span", { class: "reason", text: v.load + isDefault + (v.in_flight ? ", " + v.in_flight + " in flight" : "") }));
        if (v.reason) line.append(el("div", { class: "reason", text: v.reason }));
        versions.append(line);
      }
      const memory = m.versions.reduce((sum, v) => sum + (v.resident ? v.memory_bytes : 0), 0);
      const recent = m.recent;
      const reports = el("td");
      if (m.reports.html) reports.append(el("a", { href: m.reports.html, target: "_blank", rel: "noopener", text: "report" }));
      if (m.reports.json) {
        if (m.reports.html) reports.append(" · ");
        reports.append(el("a", { href: m.reports.json, target: "_blank", rel: "noopener", text: "json" }));
      }
      if (!m.reports.html && !m.reports.json) reports.append(el("span", { class: "reason", text: "none" }));
      const errors = recent.error_rate === null ? "—" : pct(recent.error_rate);
      const swatch = el("span", { class: "swatch" });
      swatch.style.backgroundColor = PALETTE[i % PALETTE.length]; // the model's colour in the charts
      const row = el("tr", { "data-model": m.name },
        el("td", { class: "model-name" }, swatch, m.name),
        versions,
        el("td", { class: "num", text: bytes(memory) }),
        el("td", { class: "num", text: rate(recent.rps) }),
        el("td", { class: "num", text: ms(recent.p50_ms) }),
        el("td", { class: "num", text: ms(recent.p99_ms) }),
        el("td", { class: "num", text: errors, title: m.totals.errors + " of " + m.totals.requests + " since start" }),
        el("td", { class: "num", text: ms(recent.queue_ms) + " / " + ms(recent.compute_ms) }),
        reports,
      );
      body.append(row);
    });
  }

  function renderBatches(models) {
    const box = document.getElementById("batches");
    box.replaceChildren();
    for (const m of models) {
      const total = m.batch_sizes.reduce((sum, b) => sum + b.count, 0);
      const card = el("div", { class: "batch-model" }, el("h3", { text: m.name }));
      if (total === 0) card.append(el("p", { class: "note", text: "no engine runs yet" }));
      const last = m.batch_sizes.reduce((at, b, i) => (b.count ? i : at), 0);
      m.batch_sizes.slice(0, Math.max(last + 1, 1)).forEach((b) => {
        if (total === 0) return;
        const fill = el("div", { class: "bar-fill" });
        fill.style.width = ((b.count / total) * 100).toFixed(1) + "%";
        card.append(el("div", { class: "batch-row" },
          el("span", { text: b.rows + (b.rows === "1" ? " row" : " rows") }),
          el("div", { class: "bar" }, fill),
          el("span", { class: "num", text: String(b.count) })));
      });
      box.append(card);
    }
  }

  // ---- experiments ----------------------------------------------------------------------------

  function num(v) {
    return typeof v === "number" ? v : null; // infinities arrive as "inf", NaN as null
  }
  function interval(d, format) {
    if (!d || num(d.estimate) === null) return "—";
    const end = (v) => (num(v) === null ? String(v) : format(v));
    return format(d.estimate) + " [" + end(d.lower) + ", " + end(d.upper) + "]";
  }
  function seconds(v) {
    return num(v) === null ? "—" : ms(v * 1000);
  }

  function renderExperiments(experiments) {
    const box = document.getElementById("experiment-list");
    box.replaceChildren();
    document.getElementById("experiments-empty").hidden = experiments.length > 0;
    for (const x of experiments) {
      const title = el("h3", { text: x.name + " — " + x.mode + " " });
      title.append(el("span", { class: "phase " + x.phase, text: x.phase.replace("_", " ") }));
      if (x.mode === "canary") title.append(" step " + (x.step + 1) + ", candidate at " + x.share_percent + "%");
      const card = el("div", { class: "experiment", "data-experiment": x.name }, title);
      if (x.decision) card.append(el("p", { class: "decision", text: "decision: " + x.decision.action + " — " + x.decision.reason }));
      const last = x.decisions.length ? x.decisions[x.decisions.length - 1] : null;
      if (!x.decision && last) card.append(el("p", { class: "decision", text: "decided: " + last.action + " — " + last.reason }));
      const feedback = x.arms.some((a) => a.feedback);
      const head = el("tr", {}, ...["arm", "role", "share", "assigned", "requests", "error rate", "p50", "p99"].map((h) => el("th", { text: h })));
      if (feedback) head.append(el("th", { text: x.primary_metric + " (with feedback)" }));
      const body = el("tbody");
      for (const a of x.arms) {
        const row = el("tr", { "data-arm": a.label },
          el("td", { class: "model-name", text: a.label }),
          el("td", { text: a.role }),
          el("td", { class: "num", text: pct(a.share) }),
          el("td", { class: "num", text: String(a.assigned) }),
          el("td", { class: "num", text: String(a.requests) }),
          el("td", { class: "num", text: interval(a.error_rate, pct) }),
          el("td", { class: "num", text: interval(a.latency_s.p50, seconds) }),
          el("td", { class: "num", text: interval(a.latency_s.p99, seconds) }));
        if (a.feedback) row.append(el("td", { class: "num", text: (num(a.feedback.mean) === null ? "—" : a.feedback.mean.toFixed(3)) + " (" + a.feedback.with_feedback + ")" }));
        body.append(row);
      }
      card.append(el("table", {}, el("thead", {}, head), body));
      const notes = [];
      if (x.shadow) notes.push("shadow: " + x.shadow.compared + " compared, agreement " + interval(x.shadow.agreement, pct) + ", " + x.shadow.shed + " copies shed");
      if (x.srm) notes.push("sample ratio p = " + (num(x.srm.p_value) === null ? "—" : x.srm.p_value.toPrecision(2)) + (x.srm.alarm ? " (MISMATCH)" : ""));
      for (const c of x.checks) {
        notes.push(c.role + " " + c.name + ": " + interval(c, (v) => v.toPrecision(3)) + ", harmful " + c.harmful_side + " " + c.bound);
      }
      for (const note of notes) card.append(el("div", { class: "reason", text: note }));
      box.append(card);
    }
  }

  // ---- charts -------------------------------------------------------------------------------

  function chartOptions(names, fields, container, logScale) {
    const series = [{}];
    names.forEach((name, i) => {
      for (const [, suffix, dash] of fields) {
        series.push({ label: name + suffix, stroke: PALETTE[i % PALETTE.length], width: 2, dash: dash, spanGaps: false });
      }
    });
    return {
      width: Math.max(300, container.clientWidth),
      height: 220,
      series: series,
      scales: { x: { time: true }, y: logScale ? { distr: 3 } : { range: (u, min, max) => [0, Math.max(max || 0, 1e-9) * 1.1] } },
      axes: [{}, { size: 60 }],
      legend: { live: true },
    };
  }

  function chartData(series, names, fields, scale) {
    const data = [series.t];
    for (const name of names) {
      const columns = series.models[name];
      for (const [field] of fields) {
        const column = columns ? columns[field] : series.t.map(() => null);
        data.push(scale === 1 ? column : column.map((v) => (v === null ? null : v * scale)));
      }
    }
    return data;
  }

  function updateCharts(series) {
    const names = Object.keys(series.models);
    const key = names.join("\u0000");
    const specs = { rate: ["chart-rate", false, 1], latency: ["chart-latency", true, 1], errors: ["chart-errors", false, 100], queue: ["chart-queue", true, 1] };
    for (const [kind, [id, logScale, scale]] of Object.entries(specs)) {
      const container = document.getElementById(id);
      const fields = FIELDS_PER_CHART[kind];
      const data = chartData(series, names, fields, scale);
      if (key !== chartModels || !dash.charts[kind]) {
        if (dash.charts[kind]) dash.charts[kind].destroy();
        container.replaceChildren();
        dash.charts[kind] = new uPlot(chartOptions(names, fields, container, logScale), data, container);
      } else {
        dash.charts[kind].setData(data);
      }
      container.dataset.points = String(series.t.length);
    }
    chartModels = key;
  }

  window.addEventListener("resize", () => {
    for (const [kind, chart] of Object.entries(dash.charts)) {
      const container = document.getElementById("chart-" + kind);
      if (container) chart.setSize({ width: Math.max(300, container.clientWidth), height: 220 });
    }
  });

  // ---- failure log --------------------------------------------------------------------------

  function failureQuery() {
    const params = new URLSearchParams();
    const model = document.getElementById("filter-model").value;
    const status = document.getElementById("filter-status").value;
    const since = document.getElementById("filter-since").value;
    params.set("limit", document.getElementById("filter-limit").value);
    if (model) params.set("model", model);
    if (status) params.set("status", status);
    if (since) params.set("since", String(Date.now() / 1000 - Number(since)));
    return "/v2/logs/failures?" + params.toString();
  }

  function renderFailures(failures) {
    const body = document.querySelector("#failures tbody");
    body.replaceChildren();
    for (const f of failures) {
      const when = new Date(f.timestamp * 1000);
      body.append(el("tr", { "data-request-id": f.request_id },
        el("td", { class: "num", text: when.toLocaleString(), title: f.time }),
        el("td", { text: f.model }),
        el("td", { text: f.version || "—" }),
        el("td", { class: "num status-" + String(f.status)[0], text: String(f.status) }),
        el("td", { class: "message", text: f.message }),
        el("td", { text: f.request_id }),
        el("td", { text: f.client || "—" }),
        el("td", { text: f.arm || "—" })));
    }
    document.getElementById("failures-empty").hidden = failures.length > 0;
  }

  function updateModelFilter(models) {
    const select = document.getElementById("filter-model");
    const known = new Set(Array.from(select.options).map((o) => o.value));
    for (const m of models) {
      if (!known.has(m.name)) select.append(el("option", { value: m.name, text: m.name }));
    }
  }

  async function refreshFailures() {
    try {
      const answer = await getJSON(failureQuery());
      renderFailures(answer.failures);
      if (!answer.enabled) document.getElementById("failures-empty").textContent = "The failure log is off (--failure-log-entries 0).";
      dash.failureUpdates++;
    } catch (e) {
      /* shown by the state poll's status line */
    }
  }

  // ---- polling ------------------------------------------------------------------------------

  async function poll() {
    try {
      const state = await getJSON("/v2/dashboard/state");
      dash.state = state;
      pollMs = Math.max(500, Math.min(10000, state.sample_seconds * 1000));
      document.getElementById("logout").hidden = !state.signed_in;
      renderMemory(state.memory);
      renderModels(state.models);
      renderBatches(state.models);
      renderExperiments(state.experiments || []);
      updateModelFilter(state.models);
      if (typeof uPlot !== "undefined") updateCharts(state.series);
      dash.updates++;
      document.getElementById("updated").textContent = "updated " + new Date(state.time * 1000).toLocaleTimeString();
    } catch (e) {
      document.getElementById("updated").textContent = "disconnected (" + e.message + "), retrying";
    }
    await refreshFailures();
    setTimeout(poll, pollMs);
  }

  document.getElementById("failure-filters").addEventListener("change", refreshFailures);
  poll();
})();
