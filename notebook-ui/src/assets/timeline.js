// The timeline view: one lane per node on a virtual-time axis, drawn on a canvas
// from the server's aggregated data (/api/runs/ID/lanes): message and log density per
// bucket, faults as spans, state changes, service starts and exits and property events
// as marks. Zoom with the wheel, pan by dragging; each change asks the server for the
// new window (debounced) and redraws the data it has meanwhile.
"use strict";

(function () {
  const cfg = JSON.parse(document.getElementById("timeline-config").textContent);
  const canvas = document.getElementById("timeline");
  const ctx = canvas.getContext("2d");
  const tip = document.getElementById("timeline-tip");
  const label = document.getElementById("timeline-window");
  const LEFT = 110, AXIS = 24, MIN_WINDOW = 100000; // ns
  const COLORS = { state: "#3d4a66", start: "#1f7a3f", exit: "#e07b00", pass: "#2aa14b", fail: "#b3261e" };
  let data = null, from = null, to = null, start = 0, end = 1, pending = null, seq = 0;

  // 3 decimals at most, trailing zeros (after the point only) dropped: 300s, 1.5ms.
  function short(x) { return x.toFixed(3).replace(/\.?0+$/, ""); }
  function fmt(ns) {
    ns = Math.round(ns);
    if (ns >= 1e9) return short(ns / 1e9) + "s";
    if (ns >= 1e6) return short(ns / 1e6) + "ms";
    if (ns >= 1e3) return short(ns / 1e3) + "µs";
    return ns + "ns";
  }
  function width() { return canvas.clientWidth; }
  function x(t) { return LEFT + (t - from) / (to - from) * (width() - LEFT); }
  function t(px) { return from + (px - LEFT) / (width() - LEFT) * (to - from); }

  async function load() {
    const mine = ++seq;
    const buckets = Math.max(50, Math.floor(width() - LEFT));
    const q = from === null ? "" : "&from=" + Math.floor(from) + "&to=" + Math.ceil(to);
    const res = await fetch("/api/runs/" + encodeURIComponent(cfg.timeline) + "/lanes?buckets=" + buckets + q);
    const d = await res.json();
    if (mine !== seq) return; // a newer window was asked for
    if (!res.ok) { label.textContent = d.error || "HTTP " + res.status; return; }
    data = d; start = d.start_ns; end = d.end_ns;
    if (from === null) { from = d.from_ns; to = d.to_ns; }
    draw();
  }
  function later() { clearTimeout(pending); pending = setTimeout(load, 120); }

  function ticks() {
    const span = to - from, target = (width() - LEFT) / 110;
    let step = Math.pow(10, Math.floor(Math.log10(span / target)));
    for (const m of [2, 5, 10]) if (span / step > target) step = Math.pow(10, Math.floor(Math.log10(span / target))) * m;
    const out = [];
    for (let v = Math.ceil(from / step) * step; v <= to; v += step) out.push(v);
    return out;
  }

  function draw() {
    const dpr = window.devicePixelRatio || 1;
    const nodes = data ? data.nodes : [];
    const laneH = Math.max(34, Math.min(70, 320 / Math.max(1, nodes.length)));
    const h = AXIS + nodes.length * laneH + 6;
    canvas.style.height = h + "px";
    canvas.width = Math.floor(width() * dpr); canvas.height = Math.floor(h * dpr);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width(), h);
    ctx.font = "12px system-ui, sans-serif";
    label.textContent = fmt(from) + " – " + fmt(to) + " of " + fmt(end) + (data && data.marks_truncated ? " (some marks left out: zoom in)" : "");
    ctx.fillStyle = "#6b7385"; ctx.strokeStyle = "#e6e9f0";
    for (const v of ticks()) {
      const px = x(v);
      ctx.beginPath(); ctx.moveTo(px, AXIS - 4); ctx.lineTo(px, h); ctx.stroke();
      ctx.fillText(fmt(v), px + 2, 14);
    }
    if (!data) return;
    const hits = [];
    nodes.forEach((node, i) => {
      const y0 = AXIS + i * laneH;
      ctx.fillStyle = i % 2 ? "#fafbfd" : "#f3f5f9"; ctx.fillRect(LEFT, y0, width() - LEFT, laneH);
      ctx.fillStyle = "#1d2330"; ctx.fillText(node, 6, y0 + laneH / 2 + 4);
      const bw = data.bucket_ns;
      for (const [series, color, frac] of [[data.logs[i], "#b7bdca", 0.35], [data.messages[i], "#5b8def", 0.45]]) {
        const max = Math.max(1, ...series);
        ctx.fillStyle = color;
        series.forEach((c, b) => {
          if (!c) return;
          const a = x(data.from_ns + b * bw), w = Math.max(1, x(data.from_ns + (b + 1) * bw) - a);
          const bh = Math.max(1, (c / max) * laneH * frac);
          ctx.fillRect(a, y0 + laneH - bh, w, bh);
        });
      }
      for (const s of data.spans) {
        if (s.node !== node) continue;
        const a = Math.max(LEFT, x(s.from_ns)), b = Math.min(width(), x(Math.max(s.to_ns, s.from_ns + 1)));
        ctx.fillStyle = "rgba(179, 38, 30, .22)"; ctx.fillRect(a, y0 + 2, Math.max(2, b - a), laneH - 4);
        // The label only where it fits; the tooltip always has it.
        if (ctx.measureText(s.label).width + 6 < b - a) { ctx.fillStyle = "#7a1b15"; ctx.fillText(s.label, a + 3, y0 + 13); }
        hits.push({ x0: a, x1: Math.max(a + 2, b), y0, y1: y0 + laneH, text: s.label + " (" + fmt(s.from_ns) + " – " + fmt(s.to_ns) + ")", moment: cfg.timeline + "@" + s.from_ns + "ns" });
      }
      for (const m of data.marks) {
        if (m.node !== node) continue;
        const px = x(m.vtime_ns);
        ctx.fillStyle = COLORS[m.kind] || "#333";
        const yy = y0 + (m.kind === "fail" || m.kind === "pass" ? laneH * 0.3 : laneH * 0.55);
        ctx.beginPath();
        if (m.kind === "fail") { ctx.moveTo(px, yy - 6); ctx.lineTo(px + 5, yy + 4); ctx.lineTo(px - 5, yy + 4); }
        else ctx.arc(px, yy, 4, 0, 2 * Math.PI);
        ctx.fill();
        hits.push({ x0: px - 5, x1: px + 5, y0: yy - 7, y1: yy + 7, text: fmt(m.vtime_ns) + " " + node + ": " + m.label, moment: m.moment, mark: true });
      }
    });
    canvas._hits = hits; canvas._laneH = laneH;
  }

  function hitAt(ev) {
    const r = canvas.getBoundingClientRect(), px = ev.clientX - r.left, py = ev.clientY - r.top;
    const hits = canvas._hits || [];
    return hits.find((h) => h.mark && px >= h.x0 && px <= h.x1 && py >= h.y0 && py <= h.y1)
      || hits.find((h) => px >= h.x0 && px <= h.x1 && py >= h.y0 && py <= h.y1);
  }

  canvas.addEventListener("wheel", (ev) => {
    if (from === null) return;
    ev.preventDefault();
    const r = canvas.getBoundingClientRect(), at = t(Math.max(LEFT, ev.clientX - r.left));
    const f = ev.deltaY > 0 ? 1.25 : 0.8;
    let span = Math.min(end - start, Math.max(MIN_WINDOW, (to - from) * f));
    from = Math.max(start, at - (at - from) * span / (to - from)); to = Math.min(end, from + span); from = Math.max(start, to - span);
    draw(); later();
  }, { passive: false });

  let drag = null;
  canvas.addEventListener("mousedown", (ev) => { drag = { x: ev.clientX, from, to, moved: false }; canvas.style.cursor = "grabbing"; });
  window.addEventListener("mouseup", (ev) => {
    if (!drag) return;
    const moved = drag.moved; drag = null; canvas.style.cursor = "grab";
    if (moved) { later(); return; }
    const hit = hitAt(ev);
    const r = canvas.getBoundingClientRect(), px = ev.clientX - r.left;
    if (hit) location.href = "/moments/" + hit.moment;
    else if (px > LEFT && ev.target === canvas) location.href = "/moments/" + cfg.timeline + "@" + Math.round(t(px)) + "ns";
  });
  window.addEventListener("mousemove", (ev) => {
    if (drag) {
      const dx = ev.clientX - drag.x;
      if (Math.abs(dx) > 3) drag.moved = true;
      const span = drag.to - drag.from, shift = -dx / (width() - LEFT) * span;
      from = Math.min(Math.max(start, drag.from + shift), end - span); to = from + span;
      draw(); return;
    }
    const hit = ev.target === canvas ? hitAt(ev) : null;
    if (hit) { tip.style.display = "block"; tip.style.left = ev.clientX + 12 + "px"; tip.style.top = ev.clientY + 12 + "px"; tip.textContent = hit.text; }
    else tip.style.display = "none";
  });
  function reset() { from = start; to = end; draw(); later(); }
  canvas.addEventListener("dblclick", reset);
  document.getElementById("timeline-reset").addEventListener("click", reset);
  window.addEventListener("resize", () => { draw(); later(); });
  window.timelineReady = load();
})();
