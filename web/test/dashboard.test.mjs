// The built-in dashboard in a real browser: given read tokens it lists their sites, shows
// the totals, a time series chart, top pages, sources, countries and devices, and a live
// realtime counter; a screenshot must show the chart. Values that visitors control (paths,
// campaign names) are shown as text, never run as HTML.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { PNG } from 'pngjs';
import { CHROME_UA, IPHONE_UA, launchChromium, startSightline } from './support.mjs';

const TENANT = `apiVersion: sightline.dev/v1alpha1
kind: AnalyticsTenant
metadata: { name: dash }
spec:
  sites: { allowed: [{ id: dash.test }, { id: other.test }] }
`;

let sightline, browser, read, readOther;

async function send(ua, ip, country, url, referrer) {
  const r = await fetch(`${sightline.url}/v1/collect`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${sightline.token('dash.test', 'write')}`, 'Content-Type': 'application/json', 'User-Agent': ua, 'X-Forwarded-For': ip, 'CF-IPCountry': country },
    body: JSON.stringify({ url, referrer }),
  });
  assert.equal(r.status, 202);
}

before(async () => {
  sightline = await startSightline(TENANT, ['--trusted-proxy', '127.0.0.1/32', '--country-header', 'CF-IPCountry', '--realtime-interval-ms', '300']);
  read = sightline.token('dash.test', 'read');
  readOther = sightline.token('other.test', 'read');
  await send(CHROME_UA, '198.51.100.1', 'DE', 'https://dash.test/', 'https://www.google.com/');
  await send(CHROME_UA, '198.51.100.1', 'DE', 'https://dash.test/pricing', 'https://dash.test/');
  await send(IPHONE_UA, '198.51.100.2', 'FR', 'https://dash.test/', 'https://t.co/x');
  await send(CHROME_UA, '198.51.100.3', 'DE', 'https://dash.test/pricing?utm_source=%3Cimg%20src%3Dx%20onerror%3Dwindow.pwned%3D1%3E', null);
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  sightline?.stop();
});

const text = (page, selector) => page.$$eval(selector, (els) => els.map((e) => e.textContent.trim()));

test('the dashboard shows the site, its numbers, a chart and a live counter', async () => {
  const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${sightline.url}/#tokens=${read},${readOther}`);
  await page.waitForSelector('body[data-loaded="true"]');

  assert.deepEqual(await text(page, '#site option'), ['dash.test', 'other.test']);
  assert.deepEqual(await text(page, '#tiles .value'), ['3', '3', '4', '67%', '0m 0s']);
  const bars = await page.$$eval('#chart rect', (rs) => rs.map((r) => Number(r.dataset.visitors)));
  assert.equal(bars.length, 7, 'seven days');
  assert.equal(bars[6], 3, 'today has the three visitors');
  assert.deepEqual(await text(page, '#pages td'), ['/', '2', '/pricing', '2']);
  assert.deepEqual(await text(page, '#countries td'), ['DE', '2', 'FR', '1']);
  assert.deepEqual(await text(page, '#devices td'), ['desktop', '2', 'mobile', '1']);
  // A campaign name is whatever a visitor put in the URL: shown as text, never run.
  const sources = await text(page, '#sources td');
  assert.ok(sources.includes('<img src=x onerror=window.pwned=1>'), sources.join('|'));
  assert.equal(await page.evaluate(() => window.pwned), undefined);
  assert.equal(await page.$$eval('#sources img', (imgs) => imgs.length), 0);
  // The realtime counter follows the stream.
  await page.waitForFunction(() => document.getElementById('realtime').textContent === '3');

  // The screenshot shows the chart: the accent colour fills the bar of today.
  const shot = PNG.sync.read(await page.screenshot({ path: process.env.DASHBOARD_SCREENSHOT || undefined, fullPage: false }));
  const box = await page.$eval('#chart rect:last-of-type', (r) => {
    const b = r.getBoundingClientRect();
    return { x: Math.round(b.x + b.width / 2), y: Math.round(b.y + b.height / 2) };
  });
  const at = (x, y) => {
    const i = (shot.width * y + x) * 4;
    return [shot.data[i], shot.data[i + 1], shot.data[i + 2]];
  };
  assert.deepEqual(at(box.x, box.y), [0x4f, 0x46, 0xe5], 'the bar is drawn in the accent colour');
  let accent = 0;
  for (let i = 0; i < shot.data.length; i += 4) {
    if (shot.data[i] === 0x4f && shot.data[i + 1] === 0x46 && shot.data[i + 2] === 0xe5) accent += 1;
  }
  assert.ok(accent > 500, `only ${accent} accent pixels: is the chart drawn?`);

  // Another site of the tokens: its own (empty) numbers.
  await page.evaluate(() => { document.body.dataset.loaded = ''; });
  await page.selectOption('#site', 'other.test');
  await page.waitForSelector('body[data-loaded="true"]');
  assert.deepEqual(await text(page, '#tiles .value'), ['0', '0', '0', '0%', '0m 0s']);
  assert.deepEqual(await text(page, '#pages td'), ['No data yet']);
  assert.deepEqual(errors, []);
  await context.close();
});

test('without tokens the dashboard asks for them', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${sightline.url}/`);
  assert.equal(await page.isVisible('#login'), true);
  await page.fill('#tokens', 'not-a-token');
  await page.click('#open');
  assert.equal(await page.textContent('#login-error'), 'No read token found.');
  await page.fill('#tokens', read);
  await page.click('#open');
  await page.waitForSelector('body[data-loaded="true"]');
  assert.deepEqual(await text(page, '#site option'), ['dash.test']);
  // The page's policy lets only its own script run and talk only to its origin.
  const r = await fetch(`${sightline.url}/`);
  assert.match(r.headers.get('content-security-policy'), /script-src 'sha256-[^']+'; .*connect-src 'self'/);
  await context.close();
});
