// The loss-kernel explorer: a WebGL map of every sample (plotly scattergl), coloured by a
// menu; hovering shows a sample, clicking lists its nearest neighbours by correlation, the
// search box finds samples by index or text. Reads the JSON document that
// losskernel_dist/analysis/explorer_data.py writes, embedded in the page; needs no network.
(function () {
  "use strict";
  const DOC = JSON.parse(document.getElementById("explorer-data").textContent);
  const N = DOC.n;
  const MAX_KEY = 40;  // categorical colourings with more levels get no key
  const MAX_RARE_TRACES = 20;  // more rare categories are drawn as one trace
  const RARE_SHARE = 0.05;  // as the static figures (analysis/plots.py): rare = drawn on top
  const MARK = /\u27e6([^\u27e7]*)\u27e7/g;  // a marked span of a text (a token in context)
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896",
    "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5"];
  const ARRAYS = {float32: Float32Array, int32: Int32Array, uint8: Uint8Array,
    uint16: Uint16Array, uint32: Uint32Array};

  function decode(t) {
    const bin = atob(t.b64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return new ARRAYS[t.dtype](bytes.buffer);
  }

  const xy = decode(DOC.xy);
  const X = new Float32Array(N), Y = new Float32Array(N);
  for (let i = 0; i < N; i++) { X[i] = xy[2 * i]; Y[i] = xy[2 * i + 1]; }
  const colourings = DOC.colourings.map(c => Object.assign({}, c, {
    data: decode(c.kind === "categorical" ? c.codes : c.values)}));
  const texts = DOC.texts;
  const lowerTexts = texts ? texts.map(t => t.toLowerCase()) : null;
  const nb = DOC.neighbours ? {k: DOC.neighbours.k, index: decode(DOC.neighbours.index),
    corr: decode(DOC.neighbours.corr)} : null;
  const thumbs = DOC.thumbnails ? (function () {
    const t = DOC.thumbnails, slot = new Int32Array(N).fill(-1);
    if (t.which === null) { for (let i = 0; i < N; i++) slot[i] = i; }
    else { decode(t.which).forEach((j, s) => { slot[j] = s; }); }
    return {h: t.shape[0], w: t.shape[1], c: t.shape[2], pixels: decode(t.pixels), slot: slot};
  })() : null;

  const gd = document.getElementById("plot");
  const state = {colouring: 0, traceIndex: [], selected: -1, matches: [], plottedMs: null,
    hoveredAt: null};
  const markerSize = N <= 3000 ? 6 : N <= 30000 ? 4 : 3;

  function esc(s) {
    return String(s).replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;",
      '"': "&quot;", "'": "&#39;"}[c]));
  }
  function fmt(v) { return Number.isFinite(v) ? Number(v.toPrecision(4)).toString() : "n/a"; }
  function hue(code, levels) {
    return levels <= PALETTE.length ? PALETTE[code]
      : "hsl(" + Math.round((code * 137.508) % 360) + ",65%,48%)";
  }
  function subset(idx, arr) { const out = new Float32Array(idx.length);
    for (let i = 0; i < idx.length; i++) out[i] = arr[idx[i]]; return out; }

  // A seeded shuffle of 0..N-1 (mulberry32): common categories are drawn interleaved, so
  // that no colour always lies on top.
  const SHUFFLED = (function () {
    let a = 0x9e3779b9;
    const rand = () => { a |= 0; a = (a + 0x6d2b79f5) | 0; let t = Math.imul(a ^ (a >>> 15), 1 | a);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t; return ((t ^ (t >>> 14)) >>> 0) / 4294967296; };
    const out = Int32Array.from({length: N}, (_, i) => i);
    for (let i = N - 1; i > 0; i--) { const j = Math.floor(rand() * (i + 1));
      const t = out[i]; out[i] = out[j]; out[j] = t; }
    return out;
  })();

  // One colouring as plotly traces; traceIndex[t][p] is the sample of point p of trace t.
  // Categories: the common ones in one trace in shuffled order, then each rare one (under
  // RARE_SHARE of the samples and a fifth of the largest) from the largest to the smallest,
  // larger and outlined, so the rarest lie on top (as the static figures draw them).
  function colourTraces(c) {
    const base = {type: "scattergl", mode: "markers", hoverinfo: "none", showlegend: false};
    if (c.kind !== "categorical") {
      return [[Object.assign({}, base, {x: X, y: Y, name: c.name,
        marker: {size: markerSize, color: c.data, colorscale: c.kind === "order" ? "Jet"
          : "Viridis", cmin: c.min, cmax: c.max, colorbar: {title: {text: c.name},
          thickness: 12}}})], [Int32Array.from({length: N}, (_, i) => i)], [null, 0]];
    }
    const levels = c.levels.length, maxCount = c.counts.reduce((a, b) => Math.max(a, b), 0);
    const rare = c.counts.map(n => n > 0 && n < RARE_SHARE * N && n < 0.2 * maxCount);
    const members = c.levels.map(() => []), shuffledCommon = [];
    for (const i of SHUFFLED) (rare[c.data[i]] ? members[c.data[i]] : shuffledCommon).push(i);
    const common = Int32Array.from(shuffledCommon);
    const traces = [Object.assign({}, base, {x: subset(common, X), y: subset(common, Y),
      name: "common categories", marker: {size: markerSize,
        color: Array.from(common, i => hue(c.data[i], levels))}})];
    const index = [common];
    const rareLevels = c.levels.map((_, l) => l).filter(l => rare[l])
      .sort((a, b) => c.counts[b] - c.counts[a] || a - b);
    const rareMarker = {size: 2 * markerSize, line: {width: 1, color: "#111"}};
    const groups = rareLevels.length <= MAX_RARE_TRACES ? rareLevels.map(l => [l])
      : [rareLevels];  // too many for a trace each: one trace, still largest to smallest
    for (const group of groups) {
      const idx = Int32Array.from([].concat(...group.map(l => members[l])));
      index.push(idx);
      traces.push(Object.assign({}, base, {x: subset(idx, X), y: subset(idx, Y),
        name: group.length === 1 ? c.levels[group[0]] + " (" + c.counts[group[0]]
          + ", rare: on top)" : "rare categories",
        marker: Object.assign({color: group.length === 1 ? hue(group[0], levels)
          : Array.from(idx, i => hue(c.data[i], levels))}, rareMarker)}));
    }
    return [traces, index, [levels <= MAX_KEY ? c.levels.map((name, l) => [name, c.counts[l],
      hue(l, levels), rare[l]]) : null, levels]];
  }

  // The key of a categorical colouring: colour, name, count, and which are drawn on top.
  function setKey(rows, levels) {
    const key = document.getElementById("key");
    key.hidden = !rows && !levels;
    key.innerHTML = !rows ? (levels ? levels + " categories (too many to list)" : "")
      : rows.map(([name, count, colour, rare]) => '<div><span class="swatch' + (rare ? " rare"
        : "") + '" style="background:' + colour + '"></span>' + esc(name) + " (" + count
        + (rare ? ", rare: on top" : "") + ")</div>").join("");
  }

  const layout = {margin: {l: 10, r: 10, t: 10, b: 10}, hovermode: "closest", dragmode: "zoom",
    uirevision: "map", showlegend: false,
    xaxis: {visible: false}, yaxis: {visible: false, scaleanchor: "x"},
    paper_bgcolor: "#fff", plot_bgcolor: "#fff"};
  const config = {responsive: true, displaylogo: false, scrollZoom: true};

  const cache = new Map();  // colouring -> its traces (built once)
  function draw() {
    if (!cache.has(state.colouring)) {
      cache.set(state.colouring, colourTraces(colourings[state.colouring]));
    }
    const [traces, index, key] = cache.get(state.colouring);
    setKey(...key);
    state.traceIndex = index;
    return Plotly.react(gd, traces, layout, config).then(drawOverlays);
  }

  // The selected sample, its neighbours and the search matches are drawn on a canvas over
  // the map, so that a click or a search costs a few circles, not a redraw of N points.
  // It is redrawn whenever plotly moves the axes (zoom, pan, resize) and hidden meanwhile.
  const overlay = document.getElementById("overlay");
  function drawOverlays() {
    const L = gd._fullLayout, box = gd.getBoundingClientRect(), dpr = window.devicePixelRatio || 1;
    overlay.width = Math.round(box.width * dpr); overlay.height = Math.round(box.height * dpr);
    overlay.style.width = box.width + "px"; overlay.style.height = box.height + "px";
    const ctx = overlay.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    if (!L || !L.xaxis || !L._size) return Promise.resolve(gd);
    const s = L._size;
    ctx.beginPath(); ctx.rect(s.l, s.t, s.w, s.h); ctx.clip();
    const r = markerSize / 2;
    const circles = (samples, radius, stroke, width, fill) => {
      ctx.lineWidth = width; ctx.strokeStyle = stroke; ctx.fillStyle = fill || "";
      for (const j of samples) {
        ctx.beginPath();
        ctx.arc(s.l + L.xaxis.l2p(X[j]), s.t + L.yaxis.l2p(Y[j]), radius, 0, 2 * Math.PI);
        if (fill) ctx.fill();
        ctx.stroke();
      }
    };
    circles(state.matches, r + 3, "#ff7f0e", 2);
    if (state.selected >= 0) {  // rings last: a neighbour on the selected point stays seen
      circles([state.selected], r + 3, "#000", 2, "#e41a1c");
      if (nb) circles(neighbourList(state.selected).map(e => e[0]), r + 5, "#111", 2);
    }
    return Promise.resolve(gd);
  }
  function hideOverlays() {
    overlay.getContext("2d").clearRect(0, 0, overlay.width, overlay.height);
  }

  function sampleOf(point) { return state.traceIndex[point.curveNumber][point.pointNumber]; }

  function neighbourList(j) {
    const out = [];
    for (let r = 0; r < nb.k; r++) {
      const i = nb.index[j * nb.k + r];
      if (i >= 0) out.push([i, nb.corr[j * nb.k + r]]);
    }
    return out;
  }

  function textHtml(j) {
    if (!texts) return "";
    return esc(texts[j]).replace(MARK, (_, tok) => "<mark>" + tok + "</mark>");
  }

  function valueOf(c, j) {
    return c.kind === "categorical" ? c.levels[c.data[j]] : fmt(c.data[j]);
  }

  function thumbnail(j, px) {
    if (!thumbs || thumbs.slot[j] < 0) return null;
    const {h, w, c, pixels} = thumbs, base = thumbs.slot[j] * h * w * c;
    const canvas = document.createElement("canvas");
    canvas.width = w; canvas.height = h; canvas.className = "thumb";
    canvas.style.width = px + "px"; canvas.style.height = Math.round(px * h / w) + "px";
    if (w <= 16) canvas.style.imageRendering = "pixelated";
    const img = canvas.getContext("2d").createImageData(w, h);
    for (let p = 0; p < h * w; p++) {
      for (let ch = 0; ch < 3; ch++) img.data[4 * p + ch] = pixels[base + p * c + (c === 3 ? ch : 0)];
      img.data[4 * p + 3] = 255;
    }
    canvas.getContext("2d").putImageData(img, 0, 0);
    return canvas;
  }

  // A sample as the page shows it everywhere: thumbnail, index and text, label, attributes.
  function sampleCard(j, rho, px) {
    const card = document.createElement("div");
    card.className = "sample";
    card.dataset.sample = j;
    const pic = thumbnail(j, px);
    if (pic) card.appendChild(pic);
    const body = document.createElement("div");
    const label = DOC.label ? colourings.find(c => c.name === DOC.label) : null;
    body.innerHTML = (rho === undefined ? "" : '<span class="rho">rho ' + (rho >= 0 ? "+" : "")
      + rho.toFixed(3) + "</span> ")
      + '<span class="idx">#' + j + "</span> <span class=\"text\">" + textHtml(j) + "</span>"
      + (label ? '<div class="label">label: ' + esc(valueOf(label, j)) + "</div>" : "")
      + '<div class="attrs">' + colourings.filter(c => c !== label).map(c =>
        esc(c.name.replace(/^attribute /, "")) + ": " + esc(valueOf(c, j))).join(" \u00b7 ")
      + "</div>";
    card.appendChild(body);
    return card;
  }

  const hoverCard = document.getElementById("hovercard");
  function showHover(j, ev) {
    hoverCard.replaceChildren(sampleCard(j, undefined, 72));
    hoverCard.dataset.sample = j;
    hoverCard.hidden = false;
    const x = ev && ev.clientX !== undefined ? ev.clientX : 20, y = ev ? ev.clientY : 20;
    hoverCard.style.left = Math.min(x + 16, window.innerWidth - 380) + "px";
    hoverCard.style.top = Math.min(y + 16, window.innerHeight - hoverCard.offsetHeight - 8) + "px";
    state.hoveredAt = performance.now();
  }

  const panel = document.getElementById("selection");
  function select(j) {
    state.selected = j;
    const out = [];
    const head = document.createElement("h2");
    head.textContent = "Sample #" + j;
    out.push(head, sampleCard(j, undefined, 96));
    const h3 = document.createElement("h3");
    if (!nb) {
      h3.textContent = "No neighbour lists in this page";
      out.push(h3);
    } else {
      h3.textContent = "Top " + nb.k + " neighbours by correlation";
      const list = document.createElement("ol");
      list.id = "neighbours";
      for (const [i, rho] of neighbourList(j)) {
        const li = document.createElement("li");
        li.appendChild(sampleCard(i, rho, 48));
        list.appendChild(li);
      }
      out.push(h3, list);
    }
    panel.replaceChildren(...out);
    return drawOverlays();
  }

  function search(query) {
    const q = query.trim();
    const status = document.getElementById("status");
    if (/^#?\d+$/.test(q)) {
      const j = parseInt(q.replace("#", ""), 10);
      state.matches = [];
      if (j < N) { status.textContent = ""; return select(j); }
      status.textContent = "no sample #" + j + " (N = " + N + ")";
      return drawOverlays();
    }
    state.matches = [];
    if (q && lowerTexts) {
      const needle = q.toLowerCase();
      for (let i = 0; i < N; i++) if (lowerTexts[i].includes(needle)) state.matches.push(i);
    }
    status.textContent = !q ? "" : !lowerTexts ? "this run has no texts: search by index"
      : state.matches.length + " samples contain \u201c" + q + "\u201d";
    const list = document.getElementById("matches");
    list.replaceChildren(...state.matches.slice(0, 50).map(i => {
      const li = document.createElement("li"); li.appendChild(sampleCard(i, undefined, 40));
      return li;
    }));
    return drawOverlays();
  }

  function recolour() {
    state.colouring = Number(document.getElementById("colour").value);
    return draw();
  }

  function setup() {
    const menu = document.getElementById("colour");
    colourings.forEach((c, i) => menu.add(new Option(c.name, String(i))));
    const label = colourings.findIndex(c => c.name === DOC.label);
    state.colouring = label >= 0 ? label : 0;
    menu.value = String(state.colouring);
    menu.addEventListener("change", recolour);
    const box = document.getElementById("search");
    box.addEventListener("keydown", e => { if (e.key === "Enter") search(box.value); });
    box.addEventListener("search", () => search(box.value));
    document.getElementById("panel").addEventListener("click", e => {
      const card = e.target.closest(".sample");
      if (card && card.parentElement.tagName === "LI") select(Number(card.dataset.sample));
    });
    return draw().then(() => {
      gd.on("plotly_hover", e => showHover(sampleOf(e.points[0]), e.event));
      gd.on("plotly_unhover", () => { hoverCard.hidden = true; });
      gd.on("plotly_click", e => select(sampleOf(e.points[0])));
      gd.on("plotly_relayouting", hideOverlays);
      gd.on("plotly_relayout", () => requestAnimationFrame(drawOverlays));
      window.addEventListener("resize", () => setTimeout(drawOverlays, 100));
      requestAnimationFrame(() => {
        state.plottedMs = performance.now();
        document.body.dataset.ready = "1";
      });
    });
  }

  // For a reader's console and the page's tests: the state, and where sample j is drawn.
  window.explorer = {state: state, select: select, search: search, recolour: recolour, N: N,
    pixelOf: function (j) {
      const L = gd._fullLayout, box = gd.getBoundingClientRect();
      return [box.left + L._size.l + L.xaxis.l2p(X[j]), box.top + L._size.t + L.yaxis.l2p(Y[j])];
    }};
  setup();
})();
