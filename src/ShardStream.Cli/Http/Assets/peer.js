// A peer's page: its /api/peer JSON, live from /events.
"use strict";
(function () {
  const events = new EventSource("/events");
  events.onmessage = (e) => {
    const d = JSON.parse(e.data);
    document.getElementById("peer").textContent =
      `peer ${d.id}, ${d.shards} shard(s)\n` +
      `received  ${d.bytesReceived} bytes (${(d.rate * 8 / 1e6).toFixed(2)} Mbit/s)\n` +
      `written   ${d.bytesWritten} bytes from offset ${d.startOffset}\n` +
      `behind    ${d.behindNewestBytes} bytes behind the newest byte received\n` +
      `parents   ${d.parents.map((p, s) => `shard ${s}: ${p < 0 ? "none" : p === 0 ? "coordinator" : "peer " + p}`).join(", ")}\n` +
      `children  ${d.children.map((c, s) => `shard ${s}: [${c.join(" ")}]`).join(", ")}\n` +
      `window    ${d.windowBytes} of ${d.windowLimit} bytes\n` +
      `lost      ${d.lostBytes} bytes, ${d.stalledShards} shard(s) stalled`;
    document.getElementById("status").textContent = "live · " + new Date().toLocaleTimeString();
  };
  events.onerror = () => { document.getElementById("status").textContent = "disconnected, retrying…"; };
})();
