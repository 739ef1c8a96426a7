// The coordinator's page: render time in chromium (docs/performance.md, "The coordinator's page").
// Opens PAGE_URL, waits for VIEWERS peers (default 200), then renders the last overlay in full
// ten times (trees, table and a forced layout: window.shardstreamRender), one a second, and
// reports the times; also the server-sent updates' own times over ten seconds (an update that
// changes nothing the trees show only rewrites the header).
// A relative PLAYWRIGHT_PACKAGE is taken from the current directory (require alone would look it up as a module name).
const { chromium } = require(require('path').resolve(process.env.PLAYWRIGHT_PACKAGE));
(async () => {
  const viewers = process.env.VIEWERS || '200';
  const b = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
  const p = await b.newPage({ viewport: { width: 1280, height: 900 } });
  await p.goto(process.env.PAGE_URL);
  await p.waitForFunction((v) => document.getElementById('viewers').textContent === v, viewers, { timeout: 120000 });
  const median = (t) => { const s = [...t].sort((x, y) => x - y); return s[Math.floor(s.length / 2)]; };
  const updates = [];
  for (let i = 0; i < 10; i++) {
    await p.waitForTimeout(1000);
    updates.push(await p.evaluate(() => [window.shardstreamRenderMs, window.shardstreamFullRender]));
  }
  const full = [];
  for (let i = 0; i < 10; i++) { await p.waitForTimeout(1000); full.push(await p.evaluate(() => window.shardstreamRender())); }
  console.log(`full render ms (${viewers} peers, 10 renders):`, [...full].sort((x, y) => x - y).map(t => t.toFixed(1)).join(' '), 'median', median(full).toFixed(1));
  console.log('server-sent updates ms:', updates.map(([t, f]) => t.toFixed(1) + (f ? ' (full)' : '')).join(' '));
  await p.screenshot({ path: process.env.SCREENSHOT || 'dashboard-200.png' });
  await b.close();
})();
