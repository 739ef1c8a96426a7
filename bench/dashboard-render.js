const { chromium } = require(process.env.PLAYWRIGHT_PACKAGE);
(async () => {
  const b = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
  const p = await b.newPage({ viewport: { width: 1280, height: 900 } });
  await p.goto(process.env.PAGE_URL);
  await p.waitForFunction(() => document.getElementById('viewers').textContent === '200', null, { timeout: 120000 });
  const times = [];
  for (let i = 0; i < 10; i++) { await p.waitForTimeout(1100); times.push(await p.evaluate(() => window.shardstreamRenderMs)); }
  times.sort((a, b) => a - b);
  console.log('render ms (10 SSE updates, 200 peers):', times.map(t => t.toFixed(1)).join(' '), 'median', times[5].toFixed(1));
  await p.screenshot({ path: process.env.SCREENSHOT || 'dashboard-200.png' });
  await b.close();
})();
