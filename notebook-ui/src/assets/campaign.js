// detvm notebook: a campaign's tree, live while the campaign runs. New timelines come
// as server-sent events (/api/campaigns/C/live) and are drawn under their parent as the
// server draws them; when the campaign ends the page reloads for the judged report.
"use strict";

(function () {
  const config = JSON.parse(document.getElementById("campaign-config").textContent);
  const tree = document.getElementById("campaign-tree");
  const state = document.getElementById("live-state");
  if (config.status !== "running" || !window.EventSource) return;

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    for (const c of children) e.append(c);
    return e;
  }
  function vt(ns) {
    const s = Math.floor(ns / 1e9), frac = ns % 1e9;
    return frac === 0 ? s + "s" : s + "." + String(frac).padStart(9, "0").replace(/0+$/, "") + "s";
  }
  function badge(status) {
    const ok = ["passed", "done", "finished", "explored"].includes(status);
    const busy = ["running", "queued", "new"].includes(status);
    return el("span", { class: "badge " + (ok ? "ok" : busy ? "busy" : "bad") }, status);
  }
  function item(t) {
    const head = el("span", { class: "tl-head" },
      el("a", { class: "tl-id", href: "/runs/" + t.timeline }, "T" + t.id), " ", badge(t.status));
    if (t.fork_moment) {
      head.append(" branch " + t.branch + " from ",
        el("a", { class: "moment", href: "/moments/" + t.fork_moment }, t.fork_moment));
    } else {
      head.append(" root (boot and setup)");
    }
    head.append(" → " + vt(t.end_ns) + " · score " + t.score.toFixed(1) + " · ",
      el("a", { class: "tl-moment", href: "/moments/" + t.end_moment }, "end moment"), " · ",
      el("a", { href: "/runs/" + t.timeline + "/logs" }, "events"));
    if (t.failed && t.failed.length) head.append(" · ", el("span", { class: "error" }, "failed: " + t.failed.join("; ")));
    if (t.error) head.append(" · ", el("span", { class: "error" }, t.error));
    const li = el("li", { id: "t" + t.id, "data-id": String(t.id), class: "tl new " + t.status }, head);
    if (t.faults) li.append(el("div", { class: "tl-faults" }, "faults: " + t.faults));
    li.append(el("ul", { class: "children" }));
    return li;
  }

  let count = tree.querySelectorAll("li.tl").length;
  const url = "/api/campaigns/" + encodeURIComponent(config.campaign) + "/live"
    + (config.after === null ? "" : "?after=" + config.after);
  const source = new EventSource(url);
  state.textContent = "live: waiting for new timelines…";
  source.addEventListener("timeline", (e) => {
    const t = JSON.parse(e.data);
    if (document.getElementById("t" + t.id)) return;
    const parent = t.parent === null ? null : document.querySelector("#t" + t.parent + " > ul.children");
    (parent || tree).append(item(t));
    count += 1;
    state.textContent = "live: " + count + " timelines so far (T" + t.id + " just arrived)";
  });
  source.addEventListener("end", (e) => {
    source.close();
    const d = JSON.parse(e.data);
    state.textContent = "the campaign ended (" + d.status + "); loading its report…";
    document.getElementById("campaign-status").replaceChildren(badge(d.status));
    setTimeout(() => location.reload(), 800);
  });
  source.addEventListener("error", (e) => {
    if (e.data) { state.textContent = "live: " + JSON.parse(e.data).error; source.close(); }
  });
})();
