// sightline.js in a real browser: headless Chromium (Debian's package, driven by
// playwright-core) loads a page with the script tag, changes route the SPA way, follows a
// link, fires a custom event and clicks an outbound link; the query API must then show
// exactly those pageviews and events. Also: the built file matches its source, and its size.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createServer } from 'node:http';
import { gzipSync } from 'node:zlib';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CHROME_UA, launchChromium, root, startSightline } from './support.mjs';

const dist = join(root, 'dist', 'sightline.js');
let sightline, serverUrl, pageServer, pageUrl, browser, work;
const tokens = {};

const TENANT = `apiVersion: sightline.dev/v1alpha1
kind: AnalyticsTenant
metadata: { name: browser }
spec:
  sites: { allowed: [{ id: browser.test }, { id: hash.test }, { id: local.test }, { id: video.test }] }
`;

// Each page variant reports to its own site, with its own script options.
const VARIANTS = {
  '': { site: 'browser.test', options: 'data-allow-localhost="true" data-spa="true" data-outbound="true"' },
  hash: { site: 'hash.test', options: 'data-allow-localhost="true" data-hash="true" data-downloads="true"' },
  local: { site: 'local.test', options: '' },
  video: { site: 'video.test', options: 'data-allow-localhost="true"' },
};

function html(variant, body) {
  const { site, options } = VARIANTS[variant];
  return `<!doctype html><html><head><title>shop</title>
<script>window.sightline = window.sightline || function () { (sightline.q = sightline.q || []).push(arguments) }</script>
<script defer src="${serverUrl}/js/sightline.js" data-site="${site}" data-token="${tokens[site].write}" ${options}></script>
</head><body>${body}</body></html>`;
}

const PAGES = {
  '/': `<h1>Shop</h1><button id="route" onclick="history.pushState({}, '', '/pricing')">Pricing</button><a id="about" href="/about">About</a>`,
  '/about': `<h1>About</h1><button id="signup" onclick="sightline('event', 'signup', {props: {plan: 'pro'}})">Sign up</button>
    <a id="out" href="https://partner.example.org/offer">Partner</a>`,
  '/hash/': `<h1>App</h1><a id="settings" href="#/settings">Settings</a><a id="report" href="/hash/files/report.pdf">Report</a>
    <a id="anchor" href="#top">Top</a>`,
  '/local/': `<h1>Local</h1><button id="signup" onclick="sightline('event', 'signup')">Sign up</button>`,
  // An autoplay video reports its start on load, without the visitor doing anything.
  '/video/': `<h1>Video</h1><script>sightline('event', 'video_autoplay', {interactive: false})</script>
    <button id="play" onclick="sightline('event', 'video_play')">Play</button>`,
};

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'sightline-tracker-'));
  sightline = await startSightline(TENANT);
  serverUrl = sightline.url;
  for (const { site } of Object.values(VARIANTS)) {
    tokens[site] = { write: sightline.token(site, 'write'), read: sightline.token(site, 'read') };
  }
  pageServer = createServer((req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    if (path.endsWith('.pdf')) {
      res.writeHead(200, { 'Content-Type': 'application/pdf' });
      return res.end('%PDF-1.4');
    }
    const variant = path.startsWith('/hash/') ? 'hash' : path.startsWith('/local/') ? 'local' : path.startsWith('/video/') ? 'video' : '';
    res.writeHead(200, { 'Content-Type': 'text/html' });
    res.end(html(variant, PAGES[path] ?? PAGES['/']));
  });
  await new Promise((r) => pageServer.listen(0, '127.0.0.1', r));
  pageUrl = `http://127.0.0.1:${pageServer.address().port}`;
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  pageServer?.close();
  sightline?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

test('the built script matches its source (npm run build) and stays under 2 KB gzipped', () => {
  const rebuilt = join(work, 'rebuilt.js');
  execFileSync(join(root, 'node_modules', '.bin', 'terser'), [join(root, 'src', 'sightline.js'), '--compress', '--mangle', '--comments', 'false', '--output', rebuilt]);
  assert.equal(readFileSync(dist, 'utf8'), readFileSync(rebuilt, 'utf8'), 'dist/sightline.js is stale: run `npm run build` in web/');
  const gz = gzipSync(readFileSync(dist), { level: 9 }).length;
  assert.ok(gz < 2048, `sightline.js is ${gz} bytes gzipped`);
});

test('the collector serves the script with an ETag and a long cache', async () => {
  const r = await fetch(`${serverUrl}/js/sightline.js`);
  assert.equal(r.status, 200);
  assert.equal(await r.text(), readFileSync(dist, 'utf8'));
  assert.match(r.headers.get('cache-control'), /max-age=86400/);
  const etag = r.headers.get('etag');
  const again = await fetch(`${serverUrl}/js/sightline.js`, { headers: { 'If-None-Match': etag } });
  assert.equal(again.status, 304);
});

async function query(path, site = 'browser.test') {
  const r = await fetch(`${serverUrl}/v1/sites/${site}/${path}`, { headers: { Authorization: `Bearer ${tokens[site].read}` } });
  assert.equal(r.status, 200);
  return r.json();
}

/// Waits until `site` has at least `events` events, then a moment longer, and returns totals.
async function settle(site, events) {
  const deadline = Date.now() + 15_000;
  const totals = async () => (await query('aggregate?period=today&metrics=visitors,visits,pageviews,events', site)).results;
  while (Date.now() < deadline && (await totals()).events < events) {
    await new Promise((r) => setTimeout(r, 200));
  }
  await new Promise((r) => setTimeout(r, 500));
  return totals();
}

const loaded = () => typeof window.sightline === 'function' && !window.sightline.q;

test('a real browser: pageview, SPA route change, navigation, custom event, outbound click', async () => {
  const context = await browser.newContext({ userAgent: CHROME_UA });
  const page = await context.newPage();
  await page.goto(`${pageUrl}/?utm_source=browser-test`);
  await page.waitForFunction(loaded);
  await page.click('#route'); // history.pushState: a pageview of /pricing
  await page.click('#about'); // a full navigation
  await page.waitForURL(`${pageUrl}/about`);
  await page.waitForFunction(loaded);
  await page.click('#signup');
  // Nothing is kept on the device.
  assert.deepEqual(await context.cookies(), []);
  assert.equal(await page.evaluate(() => localStorage.length + sessionStorage.length + document.cookie.length), 0);
  await page.click('#out', { noWaitAfter: true }); // leaves the page; the beacon still goes
  await page.waitForTimeout(500);
  await context.close();

  const totals = await settle('browser.test', 5);
  assert.deepEqual(totals, { visitors: 1, visits: 1, pageviews: 3, events: 5 });

  const pages = (await query('breakdown?period=today&property=page&metrics=pageviews,events')).results;
  assert.deepEqual(pages, [
    // Ordered by the first metric, then by value.
    { page: '/', pageviews: 1, events: 1 },
    { page: '/about', pageviews: 1, events: 3 },
    { page: '/pricing', pageviews: 1, events: 1 },
  ]);
  const names = (await query('breakdown?period=today&property=event_name&metrics=events')).results;
  assert.deepEqual(names, [
    { event_name: 'pageview', events: 3 },
    { event_name: 'Outbound Link: Click', events: 1 },
    { event_name: 'signup', events: 1 },
  ]);
  const sources = (await query('breakdown?period=today&property=source&metrics=visits')).results;
  assert.deepEqual(sources, [{ source: 'browser-test', visits: 1 }]);
});

test('hash routes and file downloads, when the page opts in', async () => {
  const context = await browser.newContext({ userAgent: CHROME_UA });
  const page = await context.newPage();
  await page.goto(`${pageUrl}/hash/`);
  await page.waitForFunction(loaded);
  await page.click('#settings'); // #/settings: a pageview
  // #top: hash mode counts every hash change (as Plausible does), but the processor keeps
  // only route-like fragments in the path, so this is another pageview of /hash.
  await page.click('#anchor');
  await page.click('#report', { noWaitAfter: true }); // a .pdf: a File Download event
  await page.waitForTimeout(500);
  await context.close();

  const totals = await settle('hash.test', 4);
  assert.deepEqual(totals, { visitors: 1, visits: 1, pageviews: 3, events: 4 });
  const pages = (await query('breakdown?period=today&property=page&metrics=pageviews,events', 'hash.test')).results;
  assert.deepEqual(pages, [
    { page: '/hash', pageviews: 2, events: 3 },
    { page: '/hash#/settings', pageviews: 1, events: 1 },
  ]);
  const names = (await query('breakdown?period=today&property=event_name&metrics=events', 'hash.test')).results;
  assert.deepEqual(names, [
    { event_name: 'pageview', events: 3 },
    { event_name: 'File Download', events: 1 },
  ]);
});

test('events marked non-interactive leave a bounce a bounce; a click ends it', async () => {
  const context = await browser.newContext({ userAgent: CHROME_UA });
  const page = await context.newPage();
  await page.goto(`${pageUrl}/video/`);
  await page.waitForFunction(loaded);
  await page.waitForTimeout(500);
  const before = await settle('video.test', 2);
  assert.deepEqual(before, { visitors: 1, visits: 1, pageviews: 1, events: 2 });
  const bounce = async () => (await query('aggregate?period=today&metrics=bounce_rate', 'video.test')).results.bounce_rate;
  assert.equal(await bounce(), 100, 'the autoplay event did not end the bounce');
  await page.click('#play');
  await page.waitForTimeout(500);
  await context.close();
  await settle('video.test', 3);
  assert.equal(await bounce(), 0, 'a click is an interaction');
});

test('localhost is not counted unless the page says so', async () => {
  const context = await browser.newContext({ userAgent: CHROME_UA });
  const page = await context.newPage();
  await page.goto(`${pageUrl}/local/`);
  await page.waitForFunction(loaded);
  await page.click('#signup');
  await page.waitForTimeout(1000);
  await context.close();
  const totals = (await query('aggregate?period=today&metrics=pageviews,events', 'local.test')).results;
  assert.deepEqual(totals, { pageviews: 0, events: 0 });
});
