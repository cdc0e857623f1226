// detvm notebook: the few things pages do in the browser. Plain JavaScript, no
// library: poll pending work, send actions to the API, run and manage cells.
"use strict";

function vtime(ns) {
  const s = Math.floor(ns / 1e9), frac = ns % 1e9;
  return frac === 0 ? s + "s" : s + "." + String(frac).padStart(9, "0").replace(/0+$/, "") + "s";
}

async function api(method, url, body) {
  const opts = { method, headers: { "X-Detvm": "1" } };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = typeof body === "string" ? body : JSON.stringify(body);
  }
  const res = await fetch(url, opts);
  let data = null;
  try { data = await res.json(); } catch (_) { /* downloads, 204 */ }
  return { status: res.status, ok: res.ok, data };
}

// A moment being replayed: wait for it, show how far it got, reload when done.
async function waitForMoment(el) {
  const moment = el.dataset.moment;
  const progress = document.getElementById("moment-progress");
  for (;;) {
    let r;
    try { r = await api("GET", "/api/moments/" + encodeURIComponent(moment) + "?wait=15"); }
    catch (e) { progress.textContent = "lost the server: " + e; return; }
    if (r.status === 200) { location.reload(); return; }
    if (r.status === 202) {
      const d = r.data;
      progress.textContent = d.status === "queued" ? "(waiting for a free worker)"
        : "reached " + vtime(d.vtime_ns) + " of " + vtime(d.target_ns);
      continue;
    }
    el.innerHTML = "";
    const p = document.createElement("p");
    p.className = "error replay-error";
    p.textContent = "The replay failed: " + ((r.data && r.data.error) || ("HTTP " + r.status));
    el.appendChild(p);
    return;
  }
}

function actionFrom(form, moment) {
  const f = (name) => (form.elements[name] ? form.elements[name].value : "");
  switch (form.dataset.kind) {
    case "moment": return { kind: "moment", moment };
    case "exec": return { kind: "exec", moment, node: f("node"), command: f("command"), limit: f("limit") };
    case "file": return { kind: "file", moment, node: f("node"), path: f("path") };
    case "branch": return { kind: "branch", moment, branch: Number(f("branch")), run_for: f("run_for") };
    case "fault": {
      const kind = f("fault");
      const fault = kind === "pause" ? { type: "pause", node: f("node"), duration: f("duration") }
        : kind === "kill" ? { type: "kill", node: f("node") }
        : { type: "partition", a: f("node"), b: f("other") };
      return { kind: "fault", moment, fault, run_for: f("run_for") };
    }
  }
  return null;
}

function setupActions(box) {
  const run = box.dataset.run, moment = box.dataset.moment;
  const err = document.getElementById("action-error");
  for (const form of box.querySelectorAll("form.action")) {
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      err.textContent = "";
      const r = await api("POST", "/api/runs/" + run + "/cells", { action: actionFrom(form, moment) });
      if (r.ok) location.href = "/runs/" + run + "/notebook#cell-" + r.data.id;
      else err.textContent = (r.data && r.data.error) || ("HTTP " + r.status);
    });
  }
}

// Cells still queued or running: poll each until it ends, then reload the page.
async function waitForCell(section) {
  const id = section.dataset.cell;
  const progress = section.querySelector(".cell-progress");
  for (;;) {
    const r = await api("GET", "/api/cells/" + id + "?wait=15");
    if (!r.ok) { if (progress) progress.textContent = (r.data && r.data.error) || "HTTP " + r.status; return; }
    if (r.data.status !== "queued" && r.data.status !== "running") { location.reload(); return; }
    if (progress) progress.textContent = r.data.vtime_ns ? "reached " + vtime(r.data.vtime_ns) : "(" + r.data.status + ")";
  }
}

function setupNotebook(bar) {
  const run = bar.dataset.run;
  const msg = document.getElementById("notebook-message");
  document.getElementById("rerun-all").addEventListener("click", async () => {
    const r = await api("POST", "/api/runs/" + run + "/cells/rerun");
    if (r.ok) location.reload(); else msg.textContent = (r.data && r.data.error) || "HTTP " + r.status;
  });
  document.getElementById("import-file").addEventListener("change", async (ev) => {
    const file = ev.target.files[0];
    if (!file) return;
    const r = await api("POST", "/api/runs/" + run + "/notebook", await file.text());
    if (r.ok) location.reload(); else msg.textContent = (r.data && r.data.error) || "HTTP " + r.status;
  });
  for (const section of document.querySelectorAll("section.cell")) {
    const id = section.dataset.cell;
    section.querySelector(".run-cell").addEventListener("click", async () => {
      const r = await api("POST", "/api/cells/" + id + "/run");
      if (r.ok) location.reload(); else msg.textContent = (r.data && r.data.error) || "HTTP " + r.status;
    });
    section.querySelector(".delete-cell").addEventListener("click", async () => {
      if (!confirm("Delete cell " + id + " and its branch's events?")) return;
      const r = await api("DELETE", "/api/cells/" + id);
      if (r.ok) location.reload(); else msg.textContent = (r.data && r.data.error) || "HTTP " + r.status;
    });
    const s = section.dataset.status;
    if (s === "queued" || s === "running") waitForCell(section);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const pending = document.getElementById("moment-pending");
  if (pending) waitForMoment(pending);
  const actions = document.querySelector(".actions");
  if (actions) setupActions(actions);
  const bar = document.querySelector(".notebook-bar");
  if (bar) setupNotebook(bar);
});
