// The coordinator's live page: shard trees in SVG, a header and a table of peers, fed by
// server-sent events from /events (the JSON of /api/overlay; its "nodes" only when they changed,
// the page keeps the last ones). No library, nothing from outside.
"use strict";
(function () {
  const SLOT = 13, LEVEL = 34, R = 4.5, PAD = 12;
  const $ = (id) => document.getElementById(id);
  let last = null;

  function rateText(bytesPerSecond) {
    const bits = bytesPerSecond * 8;
    if (bits >= 1e6) return (bits / 1e6).toFixed(2) + " Mbit/s";
    if (bits >= 1e3) return (bits / 1e3).toFixed(1) + " kbit/s";
    return bits.toFixed(0) + " bit/s";
  }

  function esc(s) {
    return String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
  }

  // Depth 1 green to the deepest red; upload use white to blue; health green, or red without a parent.
  function color(node, shard, mode, maxDepth) {
    if (node.id === 0) return "#1d2430";
    if (mode === "upload") {
      const use = node.budget === 0 ? 0 : node.used / node.budget;
      return `hsl(215, 80%, ${Math.round(92 - 55 * use)}%)`;
    }
    if (mode === "health") {
      if (node.parents.some((p) => p < 0)) return "#d33";
      return node.rttMs === null ? "#8bc48a" : "#2e9b4a";
    }
    const d = node.depths[shard];
    const t = maxDepth <= 1 ? 0 : (d - 1) / (maxDepth - 1);
    return `hsl(${Math.round(130 - 130 * t)}, 65%, 50%)`;
  }

  // A tidy layered layout: leaves take the next slot left to right (children in id order), a
  // parent sits over the middle of its children; depth is the row.
  function layout(data, shard) {
    const children = new Map();
    const byId = new Map();
    for (const n of data.nodes) {
      byId.set(n.id, n);
      if (n.id === 0) continue;
      const p = n.parents[shard];
      if (!children.has(p)) children.set(p, []);
      children.get(p).push(n.id);
    }
    const pos = new Map();
    let slot = 0, deepest = 0;
    const place = (id, depth) => {
      deepest = Math.max(deepest, depth);
      const kids = children.get(id) || [];
      if (kids.length === 0) {
        pos.set(id, { x: slot++, y: depth });
        return;
      }
      for (const k of kids) if (!pos.has(k)) place(k, depth + 1);
      pos.set(id, { x: (pos.get(kids[0]).x + pos.get(kids[kids.length - 1]).x) / 2, y: depth });
    };
    place(0, 0);
    // Peers with no parent for this shard now (being repaired): a row of their own, below.
    const orphans = data.nodes.filter((n) => n.id !== 0 && !pos.has(n.id));
    for (const n of orphans) pos.set(n.id, { x: slot++, y: deepest + 1, orphan: true });
    if (orphans.length) deepest++;
    return { pos, slots: Math.max(slot, 1), rows: deepest + 1, byId };
  }

  function drawTree(data, shard, mode) {
    const { pos, slots, rows, byId } = layout(data, shard);
    const width = slots * SLOT + 2 * PAD, height = (rows - 1) * LEVEL + 2 * PAD;
    const X = (p) => PAD + p.x * SLOT + SLOT / 2, Y = (p) => PAD + p.y * LEVEL;
    const labels = data.nodes.length <= 400;
    // An id of three digits is wider than a slot: such labels go one line lower on every other
    // slot, so that two neighbours on a row never write over each other.
    const wide = labels && data.nodes.some((n) => n.id >= 100);
    const labelY = (id, p) => Y(p) + R + 8 + (wide && id >= 100 && Math.round(p.x) % 2 === 1 ? 8 : 0);
    const parts = [];
    for (const [id, p] of pos) {
      if (id === 0 || p.orphan) continue;
      const q = pos.get(byId.get(id).parents[shard]);
      if (q) parts.push(`<path class="edge" d="M${X(q)} ${Y(q) + R}C${X(q)} ${Y(q) + LEVEL / 2},${X(p)} ${Y(p) - LEVEL / 2},${X(p)} ${Y(p) - R}"/>`);
    }
    for (const [id, p] of pos) {
      const n = byId.get(id);
      const title = id === 0 ? `coordinator: sends ${n.used}/${n.budget} shard-streams`
        : `peer ${id} ${n.address}: depth ${n.depths[shard]}, sends ${n.used}/${n.budget}` + (n.rttMs === null ? "" : `, probe RTT ${n.rttMs} ms`) + (n.srttMs == null ? "" : `, SRTT ${n.srttMs} ms`);
      parts.push(`<g data-id="${id}"><circle class="node${id === 0 ? " src" : ""}" cx="${X(p)}" cy="${Y(p)}" r="${id === 0 ? R + 2 : R}" fill="${color(n, shard, mode, data.maxDepth)}"><title>${esc(title)}</title></circle>`
        + (labels && id !== 0 ? `<text x="${X(p)}" y="${labelY(id, p)}">${id}</text>` : "") + "</g>");
    }
    const bottom = height + (wide ? 18 : 10);
    return `<div class="tree"><h3>shard ${shard}</h3><svg width="${width}" height="${bottom}" viewBox="0 0 ${width} ${bottom}" data-shard="${shard}">${parts.join("")}</svg></div>`;
  }

  // The trees and the table are rebuilt only when what they show changed (a join, a leave, a move,
  // another colouring); the header follows every update. `full` forces the rebuild (for measuring).
  let drawnKey = "", nodesText = "";
  function render(data, full) {
    const started = performance.now();
    last = data;
    const mode = $("colorby").value;
    $("rate").textContent = rateText(data.rate);
    $("viewers").textContent = data.viewers;
    $("maxdepth").textContent = data.maxDepth;
    $("upload").textContent = `${rateText(data.source.upload)} (${data.source.used}/${data.source.budget})`;
    $("topology").textContent = `${data.topology}, K=${data.shards}`;
    $("stream").textContent = "stream " + data.stream;
    const key = mode + data.maxDepth + nodesText;
    if (!full && key === drawnKey) {
      window.shardstreamRenderMs = performance.now() - started;
      window.shardstreamFullRender = false;
      return;
    }
    drawnKey = key;
    const trees = [];
    for (let s = 0; s < data.shards; s++) trees.push(drawTree(data, s, mode));
    $("trees").innerHTML = trees.join("");
    const rows = [];
    for (const n of data.nodes) {
      if (n.id === 0) continue;
      rows.push(`<tr data-id="${n.id}"><td>${n.id}</td><td class="addr">${esc(n.address)}</td><td>${n.budget}</td><td>${n.used}</td>`
        + `<td>${n.parents.join(" ")}</td><td>${n.depths.join(" ")}</td><td>${n.rttMs === null ? "–" : n.rttMs.toFixed(2)}</td></tr>`);
    }
    $("peers").tBodies[0].innerHTML = rows.join("");
    void document.body.offsetHeight; // the layout is part of the render
    const ms = performance.now() - started;
    window.shardstreamRenderMs = ms;
    window.shardstreamFullRender = true;
    $("rendertime").textContent = ms.toFixed(1);
  }

  // For measuring: render the last overlay again in full (the page's own code path), return the milliseconds.
  window.shardstreamRender = () => { render(last, true); return window.shardstreamRenderMs; };

  $("colorby").addEventListener("change", () => last && render(last, true));

  const events = new EventSource("/events");
  events.onmessage = (e) => {
    const data = JSON.parse(e.data);
    if (data.nodes) nodesText = JSON.stringify(data.nodes);
    else if (last) data.nodes = last.nodes;
    else return;
    render(data);
    $("status").textContent = "live · " + new Date().toLocaleTimeString();
  };
  events.onerror = () => { $("status").textContent = "disconnected, retrying…"; };
})();
