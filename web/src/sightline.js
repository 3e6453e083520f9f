/*
 * sightline.js: the Sightline website tracker.
 *
 *   <script defer src="https://collector.example/js/sightline.js"
 *           data-site="shop.example.com" data-token="WRITE_TOKEN"></script>
 *
 * Options (data-* attributes on the script tag):
 *   data-token            a write token for the site (required)
 *   data-api              collector base URL (default: where this script came from)
 *   data-spa              "true": count history API route changes as pageviews
 *   data-hash             "true": count hash route changes as pageviews
 *   data-outbound         "true": send "Outbound Link: Click" events
 *   data-downloads        "true": send "File Download" events
 *   data-allow-localhost  "true": also count on localhost and file:
 *
 * API: sightline('event', name, {props: {...}, revenue: {amount, currency}, interactive: false})
 *      sightline('pageview')
 * `interactive: false` marks an event the visitor did not cause (an autoplay video, a scroll
 * ping sent on load): it neither ends a bounce nor extends the visit.
 * Calls made before the script loads are queued with:
 *   window.sightline = window.sightline || function () { (sightline.q = sightline.q || []).push(arguments) }
 *
 * Sets no cookies and stores nothing on the device.
 */
(function (w, d) {
  'use strict';
  var script = d.currentScript;
  if (!script || w.__sightline) return;
  w.__sightline = 1;

  var loc = w.location;
  var attr = function (name) {
    return script.getAttribute('data-' + name);
  };
  var flag = function (name) {
    var v = attr(name);
    return v !== null && v !== 'false';
  };
  var token = attr('token');
  var endpoint = (attr('api') || new URL(script.src).origin).replace(/\/$/, '') + '/v1/collect?token=' + encodeURIComponent(token || '');
  var hashRoutes = flag('hash');
  var queued = (w.sightline && w.sightline.q) || [];
  var lastPage;

  function ignored() {
    var local = /^(localhost|127(\.\d+){3}|\[::1\])$/.test(loc.hostname) || loc.protocol === 'file:';
    return !token || (local && !flag('allow-localhost'));
  }

  function send(name, options, referrer) {
    if (ignored()) return;
    options = options || {};
    var event = { name: name, url: loc.href };
    if (referrer) event.referrer = referrer;
    if (options.props) event.props = options.props;
    if (options.revenue) event.revenue = options.revenue;
    if (options.interactive === false) event.interactive = false;
    var body = JSON.stringify(event);
    // A string body goes as text/plain: no CORS preflight, and it survives page unload.
    if (!(navigator.sendBeacon && navigator.sendBeacon(endpoint, body))) {
      fetch(endpoint, { method: 'POST', body: body, keepalive: true, headers: { 'Content-Type': 'text/plain' } }).catch(function () {});
    }
  }

  function pageview() {
    var page = hashRoutes ? loc.href : loc.href.split('#')[0];
    if (page === lastPage) return;
    // The first pageview carries the page's referrer; route changes carry the previous page.
    var referrer = lastPage || d.referrer;
    lastPage = page;
    send('pageview', null, referrer);
  }

  function sightline(command, name, options) {
    if (command === 'event') send(name, options, lastPage ? null : d.referrer);
    else if (command === 'pageview') pageview();
  }

  if (flag('spa')) {
    var push = w.history.pushState;
    w.history.pushState = function () {
      push.apply(this, arguments);
      pageview();
    };
    w.addEventListener('popstate', pageview);
  }
  if (hashRoutes) w.addEventListener('hashchange', pageview);

  var downloads = /\.(pdf|xlsx?|docx?|txt|rtf|csv|exe|key|pp[st]x?|7z|pkg|rar|gz|zip|avi|mov|mp4|mpe?g|wmv|midi?|mp3|wav|wma|dmg|iso|msi)$/i;
  d.addEventListener('click', function (e) {
    var a = e.target && e.target.closest && e.target.closest('a[href]');
    if (!a || !/^https?:$/.test(a.protocol)) return;
    if (flag('downloads') && downloads.test(a.pathname)) send('File Download', { props: { url: a.href } });
    else if (flag('outbound') && a.host !== loc.host) send('Outbound Link: Click', { props: { url: a.href } });
  });

  w.sightline = sightline;
  for (var i = 0; i < queued.length; i++) sightline.apply(null, queued[i]);

  // A prerendered page counts only once someone looks at it.
  if (d.visibilityState === 'prerender') {
    d.addEventListener('visibilitychange', function once() {
      if (d.visibilityState !== 'visible') return;
      d.removeEventListener('visibilitychange', once);
      pageview();
    });
  } else {
    pageview();
  }
})(window, document);
