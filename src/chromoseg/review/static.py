"""The review page: plain HTML, CSS and JavaScript served by :mod:`chromoseg.review.app` (no build
step, nothing fetched from elsewhere). Kept as Python strings so that every install of the package has
them (no package-data entry needed).

The page shows one metaphase at a time (the batch in a list on the left, flagged ones first): the
metaphase with every chromosome outlined and labelled (an SVG over the picture, the outlines computed
by the server with OpenCV), the karyogram beside it (rendered by the server from the current
chromosomes), the karyotype line, counts, flags and the history. Every edit goes to the JSON API and
is saved before the page shows it.
"""

INDEX_HTML = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="chromoseg-token" content="__TOKEN__">
<title>chromoseg review</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/app.css">
</head>
<body>
<aside id="side">
  <h1>chromoseg review</h1>
  <div id="folder" class="muted"></div>
  <label class="user">Reviewer <input id="user" maxlength="64" autocomplete="off" spellcheck="false"></label>
  <div class="muted small">Metaphases (flagged first) <span id="progress"></span></div>
  <ol id="batch"></ol>
  <button id="export" type="button">Export reviewed</button>
  <div id="export-out" class="small"></div>
</aside>
<main>
  <div id="top">
    <div id="title"><span id="name"></span> <span id="reviewed-mark"></span></div>
    <div id="iscn" title="karyotype line of the current chromosomes"></div>
    <div id="truth" class="muted"></div>
    <div id="status" role="status" aria-live="polite"></div>
  </div>
  <div id="tools">
    <button id="undo" type="button" title="Ctrl+Z">Undo</button>
    <button id="redo" type="button" title="Ctrl+Y or Ctrl+Shift+Z">Redo</button>
    <span class="sep"></span>
    <button id="delete" type="button" title="Delete key">Delete</button>
    <button id="join" type="button" title="J, then click the other chromosome">Join</button>
    <button id="split" type="button" title="S, click points across the chromosome, Enter">Split</button>
    <button id="draw" type="button" title="D, click points around the chromosome, Enter">Draw</button>
    <button id="brush" type="button" title="B, then paint the chromosome with the mouse held down">Brush</button>
    <input id="brush-size" type="number" min="1" max="100" step="1" value="5" title="brush radius in image pixels ([ and ] change it)">
    <select id="draw-class" title="class of a drawn chromosome"></select>
    <button id="turn" type="button" title="T: turn the selected chromosome end for end in the karyogram">Turn</button>
    <span class="sep"></span>
    <button id="mark" type="button" title="R">Mark reviewed</button>
    <label class="small" title="V: chromosomes straightened along their medial axis, or as cut"><input type="checkbox" id="straight" checked> Straightened</label>
    <a id="download" href="#" download>Karyogram PNG</a>
  </div>
  <div id="palette" aria-label="classes"></div>
  <div id="mode"></div>
  <div id="views">
    <section id="meta-view"><svg id="svg" xmlns="http://www.w3.org/2000/svg"></svg></section>
    <section id="kary-view"><div id="kwrap"><img id="karyogram" alt="karyogram"><svg id="ksvg" xmlns="http://www.w3.org/2000/svg"></svg></div></section>
  </div>
  <div id="details">
    <div id="selinfo" class="small"></div>
    <table id="counts"></table>
    <ul id="flags"></ul>
    <details open><summary>History of this metaphase</summary><ol id="history" class="small"></ol></details>
    <details><summary>Keys</summary>
      <ul class="small">
        <li>click a chromosome (in the metaphase or the karyogram) to select it; Esc clears</li>
        <li>1-9, 10-22 (two digits quickly), X, Y: set the selected chromosome's class</li>
        <li>Delete / Backspace: delete it; J then a click: join it with another</li>
        <li>S: split it along a line (click points across it, Enter); D: draw a missed chromosome (click points around it, Enter)</li>
        <li>B: paint a missed chromosome with a round brush (hold the mouse button down; a stroke around its outline takes the inside too); [ and ]: a smaller / larger brush</li>
        <li>T: turn the selected chromosome end for end in the karyogram (its other end up)</li>
        <li>V: karyogram straightened along each chromosome's medial axis, or as cut</li>
        <li>R: mark the metaphase reviewed (again: take the mark back); Ctrl+Z / Ctrl+Y: undo / redo</li>
        <li>N / P: next / previous metaphase in the list</li>
      </ul>
    </details>
  </div>
</main>
<script src="/static/app.js"></script>
</body>
</html>
"""

APP_CSS = r"""
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.35 system-ui, sans-serif; color: #1d1d1d; background: #f4f4f2; display: flex; min-height: 100vh; }
aside#side { width: 250px; flex: none; background: #24262b; color: #e8e8e8; padding: 10px; overflow-y: auto; max-height: 100vh; position: sticky; top: 0; }
aside h1 { font-size: 16px; margin: 0 0 6px; }
.muted { color: #999; } .small { font-size: 12px; }
aside .user { display: block; margin: 8px 0; font-size: 12px; }
aside .user input { width: 100%; margin-top: 2px; }
ol#batch { list-style: none; padding: 0; margin: 4px 0 10px; }
ol#batch li { border-left: 4px solid #3a9d4a; margin: 2px 0; padding: 3px 6px; background: #2e3137; }
ol#batch li.flagged { border-left-color: #e67e00; }
ol#batch li.current { background: #44618f; }
ol#batch li a { color: #fff; text-decoration: none; display: block; }
ol#batch li .sum { font-family: monospace; font-size: 12px; color: #cfd6e0; }
ol#batch li .rev { color: #7bd88f; font-size: 12px; }
main { flex: 1; padding: 8px 12px; min-width: 0; }
#top { display: flex; gap: 18px; align-items: baseline; flex-wrap: wrap; }
#title { font-size: 16px; font-weight: 600; }
#reviewed-mark { color: #2e7d32; font-size: 13px; font-weight: normal; }
#iscn { font: 600 18px monospace; }
#status { font-size: 13px; color: #555; }
#status.ok { color: #2e7d32; } #status.err { color: #c62828; font-weight: 600; }
#tools { margin: 6px 0; display: flex; gap: 4px; align-items: center; flex-wrap: wrap; }
#tools .sep { width: 10px; }
button, select { font: inherit; padding: 2px 8px; }
button.active { background: #ffd54f; }
#palette { display: flex; flex-wrap: wrap; gap: 2px; margin-bottom: 4px; }
#palette button { min-width: 30px; padding: 1px 4px; }
#palette button.current { outline: 2px solid #1565c0; font-weight: 700; }
#mode { min-height: 18px; font-size: 13px; color: #6a1b9a; }
#views { display: flex; gap: 10px; align-items: flex-start; }
#meta-view { flex: 1 1 50%; min-width: 0; background: #000; }
#kary-view { flex: 1 1 50%; min-width: 0; background: #fff; }
#svg { width: 100%; height: auto; display: block; max-height: 82vh; cursor: crosshair; }
#kwrap { position: relative; }
#kwrap.stale { opacity: 0.45; }
#karyogram { width: 100%; display: block; }
#ksvg { position: absolute; left: 0; top: 0; width: 100%; height: 100%; }
g.chrom path { fill-opacity: 0.12; stroke-width: 1.2; vector-effect: non-scaling-stroke; cursor: pointer; }
g.chrom text { fill: #fff; stroke: #000; stroke-width: 2.5px; paint-order: stroke; font-weight: 700; cursor: pointer; text-anchor: middle; dominant-baseline: central; font-family: sans-serif; }
g.chrom.weak text { fill: #ffcc80; }
g.chrom.sel path { fill-opacity: 0.35; stroke: #ffeb3b; stroke-width: 3; }
g.chrom.join path { stroke: #00e5ff; stroke-width: 3; }
.draft { fill: none; stroke: #ff4081; stroke-width: 2; vector-effect: non-scaling-stroke; pointer-events: none; }
.draft.area { fill: #ff4081; fill-opacity: 0.2; }
.brushdraft { fill: none; stroke: #ff4081; stroke-opacity: 0.5; stroke-linecap: round; stroke-linejoin: round; pointer-events: none; }
#brush-size { width: 52px; }
rect.kp { fill: transparent; stroke: none; cursor: pointer; }
rect.kp.sel { stroke: #1e88e5; stroke-width: 3; fill: rgba(30, 136, 229, 0.12); }
#details { margin-top: 8px; }
table#counts { border-collapse: collapse; font-size: 12px; margin: 4px 0; }
table#counts td { border: 1px solid #ccc; padding: 1px 5px; text-align: center; min-width: 24px; }
table#counts tr.h td { background: #eee; font-weight: 600; }
table#counts td.lo { background: #f8d0cc; } table#counts td.hi { background: #cfe0f8; }
ul#flags { color: #b35c00; font-size: 13px; margin: 4px 0; }
#export-out a { color: #9cc7ff; display: block; }
"""

APP_JS = r"""
"use strict";
(() => {
  const TOKEN = document.querySelector('meta[name="chromoseg-token"]').content;
  const NS = "http://www.w3.org/2000/svg";
  const NAMES = [];
  for (let i = 1; i <= 22; i++) NAMES.push(String(i));
  NAMES.push("X", "Y");
  const $ = (id) => document.getElementById(id);
  const S = {batch: [], view: null, layout: null, sel: null, mode: null, joinFrom: null, points: [], digits: "",
             digitTimer: null, busy: false, user: localStorage.getItem("chromoseg-review-user") || "",
             straight: localStorage.getItem("chromoseg-review-straight") !== "0"};
  $("straight").checked = S.straight;

  function setStatus(text, kind) { const el = $("status"); el.textContent = text; el.className = kind || ""; }
  function setMode(text) { $("mode").textContent = text || ""; }

  async function api(path, body) {
    const opts = {headers: {"X-Chromoseg-Token": TOKEN}, credentials: "same-origin", cache: "no-store"};
    if (S.user) opts.headers["X-Chromoseg-User"] = encodeURIComponent(S.user);
    if (body !== undefined) {
      opts.method = "POST";
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    const r = await fetch(path, opts);
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    if (!r.ok) {
      const err = new Error((data && data.error) || (r.status + " " + r.statusText));
      err.status = r.status; err.data = data;
      throw err;
    }
    return data;
  }

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function svgEl(tag, attrs) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  }

  // ------------------------------------------------------------------ batch list
  async function loadBatch() {
    const data = await api("/api/batch");
    S.batch = data.images;
    $("folder").textContent = data.folder;
    if (!S.user) { S.user = data.user || ""; }
    $("user").value = S.user;
    for (const w of data.warnings || []) setStatus(w, "err");
    renderBatch();
    return data;
  }

  function renderBatch() {
    const ol = $("batch");
    ol.replaceChildren();
    $("progress").textContent = "\u00b7 " + S.batch.filter((b) => b.reviewed).length + " of " + S.batch.length + " reviewed";
    for (const im of S.batch) {
      const li = el("li", {"data-id": im.id});
      li.className = (im.flagged ? "flagged" : "ok") + (im.reviewed ? " reviewed" : "") +
        (S.view && S.view.id === im.id ? " current" : "");
      const a = el("a", {href: "#image=" + im.id, title: im.file_name + (im.flags.length ? "\n" + im.flags.join("\n") : "")});
      a.append(el("div", {}, im.name));
      a.append(el("div", {class: "sum"}, im.summary + (im.flags.length ? "  \u2691" + im.flags.length : "")));
      if (im.reviewed) a.append(el("div", {class: "rev"}, "\u2713 reviewed by " + im.reviewed.by));
      li.append(a);
      ol.append(li);
    }
  }

  function step(delta) {
    if (!S.batch.length) return;
    const k = S.batch.findIndex((b) => S.view && b.id === S.view.id);
    const next = S.batch[(k + delta + S.batch.length) % S.batch.length];
    location.hash = "#image=" + next.id;
  }

  // ------------------------------------------------------------------ one metaphase
  async function showImage(id, keepSel) {
    try {
      const v = await api("/api/images/" + id);
      applyView(v, keepSel ? S.sel : null);
      renderBatch();
    } catch (e) { setStatus("Could not load metaphase " + id + ": " + e.message, "err"); }
  }

  function applyView(v, sel) {
    const newImage = !S.view || S.view.id !== v.id;
    S.view = v;
    S.sel = (sel != null && v.instances.some((i) => i.id === sel)) ? sel : null;
    cancelMode();
    renderView(newImage);
  }

  function renderView(newImage) {
    const v = S.view;
    $("name").textContent = v.name;
    $("reviewed-mark").textContent = v.reviewed ? "\u2713 reviewed by " + v.reviewed.by + " " + v.reviewed.at : "";
    $("iscn").textContent = v.karyotype.summary;
    $("truth").textContent = v.karyotype.truth ? "known: " + v.karyotype.truth : "";
    document.title = v.name + " " + v.karyotype.summary + " - chromoseg review";
    $("undo").disabled = !v.undo; $("undo").title = v.undo ? "Undo " + v.undo + " (Ctrl+Z)" : "nothing to undo";
    $("redo").disabled = !v.redo; $("redo").title = v.redo ? "Redo " + v.redo + " (Ctrl+Y)" : "nothing to redo";
    $("mark").textContent = v.reviewed ? "Take back reviewed" : "Mark reviewed";
    $("download").href = kgUrl("png", v) + "&download=1";
    renderCounts(v.karyotype);
    const fl = $("flags"); fl.replaceChildren();
    for (const f of v.karyotype.flags) fl.append(el("li", {}, f));
    const hi = $("history"); hi.replaceChildren();
    for (const h of v.history) hi.append(el("li", {}, h.at + "  " + h.by + ": " + h.label));
    drawMetaphase(newImage);
    loadKaryogram();
    renderSelection();
  }

  function renderCounts(k) {
    const t = $("counts"); t.replaceChildren();
    for (const half of [k.counts.slice(0, 12), k.counts.slice(12)]) {
      const h = el("tr", {class: "h"}), r = el("tr");
      for (const c of half) {
        h.append(el("td", {}, c.name));
        r.append(el("td", {class: c.n < c.expected ? "lo" : (c.n > c.expected ? "hi" : "")}, String(c.n)));
      }
      t.append(h, r);
    }
  }

  function drawMetaphase(newImage) {
    const v = S.view, svg = $("svg");
    if (newImage || !svg.querySelector("image")) {
      svg.replaceChildren();
      svg.setAttribute("viewBox", "0 0 " + v.width + " " + v.height);
      svg.append(svgEl("image", {href: "/api/images/" + v.id + "/image.png", x: 0, y: 0, width: v.width, height: v.height}));
      svg.append(svgEl("g", {id: "chroms"}));
      svg.append(svgEl("g", {id: "draft"}));
    }
    const layer = svg.querySelector("#chroms");
    layer.replaceChildren();
    const fs = Math.max(10, Math.max(v.width, v.height) / 60);
    const weak = new Set(v.karyotype.weak);
    for (const inst of v.instances) {
      const g = svgEl("g", {"class": "chrom" + (weak.has(inst.id) ? " weak" : ""), "data-id": inst.id});
      const d = inst.outlines.map((c) => {
        const pts = [];
        for (let i = 0; i + 1 < c.length; i += 2) pts.push((c[i] + 0.5) + "," + (c[i + 1] + 0.5));
        return "M" + pts.join("L") + "Z";
      }).join(" ");
      g.append(svgEl("path", {d: d || "M0,0", fill: inst.color, stroke: inst.color, "fill-rule": "evenodd"}));
      const t = svgEl("text", {x: inst.center[0], y: inst.center[1], "font-size": fs});
      t.textContent = inst.label;
      g.append(t);
      const title = svgEl("title");
      title.textContent = "#" + inst.id + ": " + inst.label + (inst.score != null ? "  score " + Number(inst.score).toFixed(2) : "") +
        (inst.not_chromosome ? "  not a chromosome: " + inst.not_chromosome : "");
      g.append(title);
      layer.append(g);
    }
    drawDraft();
  }

  function kgUrl(ext, v) {
    return "/api/images/" + v.id + "/karyogram." + ext + "?v=" + v.version + "&straight=" + (S.straight ? 1 : 0);
  }
  async function loadKaryogram() {
    const v = S.view, img = $("karyogram"), wrap = $("kwrap"), straight = S.straight;
    const want = kgUrl("png", v);
    if (img.getAttribute("src") !== want) {
      wrap.classList.add("stale");  // greyed until the new karyogram is there
      img.onload = () => { if (img.getAttribute("src") === want) wrap.classList.remove("stale"); };
      img.setAttribute("src", want);
    }
    try {
      const lay = await api(kgUrl("json", v));
      if (!S.view || S.view.id !== v.id || S.view.version !== v.version || S.straight !== straight) return;
      S.layout = lay;
      const ks = $("ksvg");
      ks.replaceChildren();
      ks.setAttribute("viewBox", "0 0 " + lay.width + " " + lay.height);
      for (const p of lay.placements) {
        const r = svgEl("rect", {"class": "kp", "data-id": p.id, x: p.x - 3, y: p.y - 3, width: p.w + 6, height: p.h + 6});
        ks.append(r);
      }
      renderSelection();
    } catch (e) { setStatus("Karyogram: " + e.message, "err"); }
  }

  function renderSelection() {
    for (const g of document.querySelectorAll("g.chrom")) {
      const id = Number(g.dataset.id);
      g.classList.toggle("sel", id === S.sel);
      g.classList.toggle("join", S.mode === "join" && id === S.joinFrom);
    }
    for (const r of document.querySelectorAll("rect.kp")) r.classList.toggle("sel", Number(r.dataset.id) === S.sel);
    const inst = S.view && S.view.instances.find((i) => i.id === S.sel);
    for (const b of document.querySelectorAll("#palette button")) b.classList.toggle("current", !!inst && Number(b.dataset.c) === inst.category_id);
    $("selinfo").textContent = inst ? ("Selected #" + inst.id + ": class " + inst.label +
      (inst.model_class ? " (model: " + inst.model_class + ")" : "") +
      (inst.score != null ? ", score " + Number(inst.score).toFixed(2) : "") +
      (inst.class_by ? ", class set by " + inst.class_by : "") +
      (inst.turned_by ? ", turned by " + inst.turned_by : "") +
      (inst.origin !== "model" ? ", " + inst.origin : "") +
      (inst.weak.length ? ", weak: " + inst.weak.join(", ") : "") +
      (inst.not_chromosome ? "; not counted, not a chromosome: " + inst.not_chromosome +
        " (set its class to count it)" : "")) : "Click a chromosome to select it.";
    $("delete").disabled = $("join").disabled = $("split").disabled = $("turn").disabled = !inst;
  }

  function select(id) {
    S.sel = id;
    renderSelection();
  }

  // ------------------------------------------------------------------ modes: join, split, draw
  function cancelMode() {
    S.mode = null; S.joinFrom = null; S.points = [];
    for (const b of ["join", "split", "draw", "brush"]) $(b).classList.remove("active");
    S.stroke = null;
    setMode("");
    drawDraft();
  }
  function startMode(mode) {
    if (!S.view) return;
    if (S.mode === mode) { cancelMode(); renderSelection(); return; }
    if ((mode === "join" || mode === "split") && S.sel == null) { setStatus("Select a chromosome first", "err"); return; }
    cancelMode();
    S.mode = mode;
    $(mode).classList.add("active");
    if (mode === "join") { S.joinFrom = S.sel; setMode("Join: click the chromosome to join with #" + S.sel + " (Esc cancels)"); }
    if (mode === "split") setMode("Split #" + S.sel + ": click points along a line across it, then Enter or double-click (Esc cancels)");
    if (mode === "draw") setMode("Draw a chromosome of class " + NAMES[Number($("draw-class").value) - 1] + ": click points around it, then Enter or double-click (Esc cancels)");
    if (mode === "brush") setMode(brushText());
    renderSelection();
  }
  function brushRadius() { return Math.min(100, Math.max(1, Number($("brush-size").value) || 5)); }
  function brushText() {
    return "Brush a chromosome of class " + NAMES[Number($("draw-class").value) - 1] + " (radius " + brushRadius() +
      " px, [ ]): hold the mouse button down and paint it; it is saved when you let go (Esc cancels)";
  }
  function drawDraft() {
    const layer = document.querySelector("#svg #draft");
    if (!layer) return;
    layer.replaceChildren();
    if (S.stroke && S.stroke.length) {
      const pts = S.stroke.map((p) => p[0] + "," + p[1]).join(" ");
      const pl = svgEl("polyline", {points: S.stroke.length > 1 ? pts : pts + " " + pts, "class": "brushdraft"});
      pl.setAttribute("stroke-width", String(2 * brushRadius()));
      layer.append(pl);
      return;
    }
    if (!S.points.length) return;
    const pts = S.points.map((p) => p[0] + "," + p[1]).join(" ");
    layer.append(svgEl(S.mode === "draw" ? "polygon" : "polyline", {points: pts, "class": "draft" + (S.mode === "draw" ? " area" : "")}));
  }
  function svgPoint(ev) {
    const svg = $("svg"), pt = svg.createSVGPoint();
    pt.x = ev.clientX; pt.y = ev.clientY;
    const p = pt.matrixTransform(svg.getScreenCTM().inverse());
    return [Math.round(p.x * 10) / 10, Math.round(p.y * 10) / 10];
  }
  function finishMode() {
    if (S.mode === "split") {
      if (S.points.length < 2) { setStatus("Split: click at least two points", "err"); return; }
      const id = S.sel, line = S.points;
      cancelMode();
      edit({op: "split", id: id, line: line});
    } else if (S.mode === "draw") {
      if (S.points.length < 3) { setStatus("Draw: click at least three points", "err"); return; }
      const poly = S.points, c = Number($("draw-class").value);
      cancelMode();
      edit({op: "draw", polygon: poly, category_id: c});
    }
  }

  $("svg").addEventListener("click", (ev) => {
    if (!S.view) return;
    if (S.mode === "split" || S.mode === "draw") { S.points.push(svgPoint(ev)); drawDraft(); return; }
    if (S.mode === "brush") return;
    const g = ev.target.closest("g.chrom");
    if (!g) { if (!S.mode) select(null); return; }
    const id = Number(g.dataset.id);
    if (S.mode === "join") {
      if (id === S.joinFrom) return;
      const a = S.joinFrom;
      cancelMode();
      edit({op: "join", ids: [a, id]});
      return;
    }
    select(id);
  });
  // the brush: a stroke while the button is held down, saved when it is let go
  $("svg").addEventListener("pointerdown", (ev) => {
    if (S.mode !== "brush" || ev.button !== 0) return;
    ev.preventDefault();
    $("svg").setPointerCapture(ev.pointerId);
    S.stroke = [svgPoint(ev)];
    drawDraft();
  });
  $("svg").addEventListener("pointermove", (ev) => {
    if (S.mode !== "brush" || !S.stroke) return;
    const p = svgPoint(ev), q = S.stroke[S.stroke.length - 1];
    if (Math.hypot(p[0] - q[0], p[1] - q[1]) >= 1) { S.stroke.push(p); drawDraft(); }
  });
  $("svg").addEventListener("pointerup", (ev) => {
    if (S.mode !== "brush" || !S.stroke) return;
    const stroke = S.stroke.slice(0, 20000), c = Number($("draw-class").value), r = brushRadius();
    cancelMode();
    edit({op: "brush", stroke: stroke, radius: r, category_id: c});
  });
  $("svg").addEventListener("dblclick", (ev) => { if (S.mode === "split" || S.mode === "draw") { ev.preventDefault(); finishMode(); } });
  $("ksvg").addEventListener("click", (ev) => {
    const r = ev.target.closest("rect.kp");
    if (!r) return;
    const id = Number(r.dataset.id);
    if (S.mode === "join" && id !== S.joinFrom) { const a = S.joinFrom; cancelMode(); edit({op: "join", ids: [a, id]}); return; }
    select(id);
  });

  // ------------------------------------------------------------------ edits
  async function send(path, body, after) {
    if (!S.view || S.busy) return;
    S.busy = true;
    setStatus("saving\u2026");
    const before = new Set(S.view.instances.map((i) => i.id));
    try {
      const v = await api(path, Object.assign({version: S.view.version}, body));
      let sel = after ? after(v, before) : S.sel;
      applyView(v, sel);
      const last = v.history.length ? v.history[0].label : "";
      setStatus("Saved: " + last + " (version " + v.version + ")", "ok");
      loadBatch().catch(() => {});
    } catch (e) {
      if (e.status === 409) {
        setStatus("This metaphase was changed elsewhere (another tab?): showing the latest version, make the change again", "err");
        await showImage(S.view.id, true);
      } else {
        setStatus("Not saved: " + e.message, "err");
      }
    } finally {
      S.busy = false;
    }
  }
  function edit(op) {
    const after = (v, before) => {
      if (op.op === "delete") return null;
      if (op.op === "join" || op.op === "draw" || op.op === "brush") { const n = v.instances.filter((i) => !before.has(i.id)); return n.length ? n[0].id : null; }
      if (op.op === "split") return null;
      return S.sel;
    };
    return send("/api/images/" + S.view.id + "/edit", op, after);
  }
  function turn() {
    if (S.sel == null) { setStatus("Select a chromosome first, then turn it", "err"); return; }
    const p = S.layout && S.layout.placements.find((q) => q.id === S.sel);
    if (!p) { setStatus("This chromosome is not on the karyogram (yet): wait for it, then turn it", "err"); return; }
    edit({op: "turn", id: S.sel, top: p.bottom});
  }
  function setStraight(on) {
    S.straight = on;
    $("straight").checked = on;
    localStorage.setItem("chromoseg-review-straight", on ? "1" : "0");
    S.layout = null;
    if (S.view) { $("download").href = kgUrl("png", S.view) + "&download=1"; loadKaryogram(); }
  }
  function setClass(c) {
    if (S.mode === "draw") {
      $("draw-class").value = String(c);
      setMode("Draw a chromosome of class " + NAMES[c - 1] + ": click points around it, then Enter or double-click (Esc cancels)");
      return;
    }
    if (S.mode === "brush") { $("draw-class").value = String(c); setMode(brushText()); return; }
    if (S.sel == null) { setStatus("Select a chromosome first, then its class", "err"); return; }
    edit({op: "class", id: S.sel, category_id: c});
  }
  function typeDigit(d) {
    clearTimeout(S.digitTimer);
    if (S.digits) {
      const n = Number(S.digits + d);
      S.digits = "";
      if (n >= 1 && n <= 22) setClass(n); else setStatus("No class " + n + ": classes are 1-22, X and Y", "err");
      return;
    }
    if (d === "0") return;
    if (d === "1" || d === "2") {
      S.digits = d;
      setMode("class " + d + "\u2026 (a second digit quickly for " + d + "0-" + (d === "1" ? "19" : "22") + ")");
      S.digitTimer = setTimeout(() => { S.digits = ""; setMode(""); setClass(Number(d)); }, 700);
      return;
    }
    setClass(Number(d));
  }

  // ------------------------------------------------------------------ controls
  for (let c = 1; c <= 24; c++) {
    const b = el("button", {type: "button", "data-c": c, title: "class " + NAMES[c - 1]}, NAMES[c - 1]);
    b.addEventListener("click", () => setClass(c));
    $("palette").append(b);
    $("draw-class").append(el("option", {value: c}, NAMES[c - 1]));
  }
  $("undo").addEventListener("click", () => send("/api/images/" + S.view.id + "/undo", {}, null));
  $("redo").addEventListener("click", () => send("/api/images/" + S.view.id + "/redo", {}, null));
  $("delete").addEventListener("click", () => { if (S.sel != null) edit({op: "delete", id: S.sel}); });
  $("join").addEventListener("click", () => startMode("join"));
  $("split").addEventListener("click", () => startMode("split"));
  $("draw").addEventListener("click", () => startMode("draw"));
  $("brush").addEventListener("click", () => startMode("brush"));
  $("brush-size").addEventListener("change", () => { if (S.mode === "brush") setMode(brushText()); $("brush-size").blur(); });
  $("mark").addEventListener("click", () => { if (S.view) edit({op: "reviewed", reviewed: !S.view.reviewed}); });
  $("turn").addEventListener("click", turn);
  $("straight").addEventListener("change", () => { setStraight($("straight").checked); $("straight").blur(); });
  $("user").addEventListener("change", () => {
    S.user = $("user").value.trim();
    localStorage.setItem("chromoseg-review-user", S.user);
    setStatus("Reviewer: " + (S.user || "(the server's default)"), "ok");
  });
  $("export").addEventListener("click", async () => {
    const out = $("export-out");
    out.textContent = "exporting\u2026";
    try {
      const r = await api("/api/export", {});
      out.replaceChildren(el("div", {}, r.reviewed + " of " + r.images + " reviewed; dataset: " + r.dataset_images +
        " metaphases, " + r.dataset_annotations + " chromosomes"));
      for (const f of r.files) {
        if (/(results|dataset|images)\.json$|report\.html$/.test(f)) out.append(el("a", {href: "/files/" + f, target: "_blank"}, f));
      }
      for (const p of r.problems) out.append(el("div", {}, p));
    } catch (e) { out.textContent = "Export failed: " + e.message; }
  });

  document.addEventListener("keydown", (ev) => {
    if (ev.target.matches && ev.target.matches("input, select, textarea")) return;
    const k = ev.key;
    const ctrl = ev.ctrlKey || ev.metaKey;
    if (ctrl && (k === "z" || k === "Z")) { ev.preventDefault(); $(ev.shiftKey ? "redo" : "undo").click(); return; }
    if (ctrl && (k === "y" || k === "Y")) { ev.preventDefault(); $("redo").click(); return; }
    if (ctrl || ev.altKey) return;
    if (k === "Escape") { cancelMode(); select(null); return; }
    if (k === "Enter") { if (S.mode === "split" || S.mode === "draw") { ev.preventDefault(); finishMode(); } return; }
    if (/^[0-9]$/.test(k)) { typeDigit(k); return; }
    const lower = k.toLowerCase();
    if (lower === "x") { setClass(23); return; }
    if (lower === "y") { setClass(24); return; }
    if (k === "Delete" || k === "Backspace") {
      ev.preventDefault();
      if (S.mode === "split" || S.mode === "draw") { S.points.pop(); drawDraft(); return; }
      if (S.sel != null) edit({op: "delete", id: S.sel});
      return;
    }
    if (lower === "j") { startMode("join"); return; }
    if (lower === "s") { startMode("split"); return; }
    if (lower === "d") { startMode("draw"); return; }
    if (lower === "b") { startMode("brush"); return; }
    if (k === "[" || k === "]") {
      $("brush-size").value = String(Math.min(100, Math.max(1, brushRadius() + (k === "]" ? 1 : -1))));
      if (S.mode === "brush") { setMode(brushText()); drawDraft(); }
      return;
    }
    if (lower === "r") { $("mark").click(); return; }
    if (lower === "t") { turn(); return; }
    if (lower === "v") { setStraight(!S.straight); return; }
    if (lower === "n") { step(1); return; }
    if (lower === "p") { step(-1); return; }
  });

  function idFromHash() { const m = /image=(\d+)/.exec(location.hash); return m ? Number(m[1]) : null; }
  window.addEventListener("hashchange", () => { const id = idFromHash(); if (id != null) showImage(id); });

  (async () => {
    try {
      await loadBatch();
      const id = idFromHash();
      if (id != null) await showImage(id);
      else if (S.batch.length) location.hash = "#image=" + S.batch[0].id;
    } catch (e) { setStatus("Could not load the batch: " + e.message, "err"); }
  })();
})();
"""
