// Sends a pageview the way a website does: a page on localhost carrying the tracker
// (`<script src="COLLECTOR/js/sightline.js" data-site data-token>`), opened in Debian's
// Chromium with a desktop Chrome User-Agent (headless Chromium's own is a bot's).
//   node e2e/cluster/tracker.mjs COLLECTOR_URL WRITE_TOKEN SITE
// Uses web/'s playwright-core and its launch settings (./scripts/install-deps.sh --tests).
import { createServer } from 'node:http';
import { CHROME_UA, launchChromium } from '../../web/test/support.mjs';

const [collector, token, site] = process.argv.slice(2);
if (!collector || !token || !site) {
  console.error('usage: node e2e/cluster/tracker.mjs COLLECTOR_URL WRITE_TOKEN SITE');
  process.exit(2);
}
const page = `<!doctype html><html><head><title>e2e</title>
<script defer src="${collector}/js/sightline.js" data-site="${site}" data-token="${token}" data-allow-localhost="true"></script>
</head><body><h1>e2e</h1></body></html>`;
const server = createServer((req, res) => {
  res.writeHead(200, { 'Content-Type': 'text/html' });
  res.end(page);
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const browser = await launchChromium();
try {
  const context = await browser.newContext({ userAgent: CHROME_UA });
  const tab = await context.newPage();
  await tab.goto(`http://127.0.0.1:${server.address().port}/tracker`);
  // The script has loaded (it replaces the queue stub) and sent the pageview with
  // sendBeacon; the beacon is given a moment before the tab closes. Whether it was stored
  // is what the cluster test that follows checks, through the query API.
  await tab.waitForFunction(() => typeof window.sightline === 'function' && !window.sightline.q, null, { timeout: 30_000 });
  await tab.waitForTimeout(1000);
  await context.close();
  console.log('tracker: pageview sent');
} finally {
  await browser.close();
  server.close();
}
