// stevedore's dashboard: polls /ui/api/state every 2 s and draws it. Plain browser JavaScript, no
// build step. Everything from the server is put on the page as text (textContent), never as HTML.
'use strict';

const POLL_MS = 2000;
const SVG = 'http://www.w3.org/2000/svg';

function bytes(n) {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? String(n) : n.toFixed(n < 10 ? 2 : 1)) + ' ' + units[i];
}

function duration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return s + ' s';
  if (s < 3600) return Math.floor(s / 60) + ' min ' + (s % 60) + ' s';
  const h = Math.floor(s / 3600);
  return h < 48 ? h + ' h ' + Math.floor((s % 3600) / 60) + ' min' : Math.floor(h / 24) + ' days';
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString();
}

function text(id, value) {
  document.getElementById(id).textContent = value;
}

function cell(tr, value, cls) {
  const td = document.createElement('td');
  if (value instanceof Node) td.appendChild(value); else td.textContent = value;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function fillTable(id, rows, empty, columns) {
  const body = document.querySelector('#' + id + ' tbody');
  const out = [];
  for (const row of rows) {
    const tr = document.createElement('tr');
    columns(row, tr);
    out.push(tr);
  }
  if (out.length === 0) {
    const tr = document.createElement('tr');
    const td = cell(tr, empty, 'muted');
    td.colSpan = document.querySelectorAll('#' + id + ' thead th').length;
    out.push(tr);
  }
  body.replaceChildren(...out);
}

function progress(written, size) {
  const wrap = document.createElement('span');
  wrap.className = 'progress';
  const bar = document.createElement('span');
  bar.className = 'bar';
  const fill = document.createElement('span');
  fill.style.width = size ? Math.min(100, (100 * written) / size).toFixed(1) + '%' : '0';
  bar.appendChild(fill);
  const label = document.createElement('span');
  label.textContent = size ? bytes(written) + ' of ' + bytes(size) + ' (' + Math.floor((100 * written) / size) + ' %)' : bytes(written) + ' (size unknown)';
  wrap.append(bar, label);
  return wrap;
}

/** Stacked bars, one per minute: `a` below (the store), `b` above (upstream). */
function chart(id, buckets, a, b, format) {
  const svg = document.getElementById(id);
  const w = 600, h = 120, n = buckets.length, bw = w / n;
  const max = Math.max(1, ...buckets.map((x) => x[a] + x[b]));
  const parts = [];
  buckets.forEach((x, i) => {
    const ha = (h - 4) * (x[a] / max), hb = (h - 4) * (x[b] / max);
    for (const [v, y, cls, key] of [[ha, h - ha, 'store', a], [hb, h - ha - hb, 'upstream', b]]) {
      if (v <= 0) continue;
      const r = document.createElementNS(SVG, 'rect');
      r.setAttribute('x', String(i * bw + 0.5));
      r.setAttribute('y', String(y));
      r.setAttribute('width', String(Math.max(1, bw - 1)));
      r.setAttribute('height', String(v));
      r.setAttribute('class', cls);
      const t = document.createElementNS(SVG, 'title');
      t.textContent = clock(x.at) + ': ' + format(x[key]);
      r.appendChild(t);
      parts.push(r);
    }
  });
  svg.replaceChildren(...parts);
}

function sourceState(s) {
  const span = document.createElement('span');
  span.className = 'state ' + s.state.replace(/ /g, '-');
  span.textContent = s.state;
  return span;
}

function render(st) {
  const since = st.now - st.startedAt;
  text('about', 'v' + st.version + ' · ' + st.mode + ' · up ' + duration(since) + (st.viewer ? ' · signed in as ' + st.viewer : ''));

  const s = st.store;
  const used = s.cachedBytes + s.pinnedBytes;
  text('store-used', bytes(used) + (s.maxSize !== null ? ' of ' + bytes(s.maxSize) : ''));
  const bar = document.getElementById('store-bar');
  const bound = s.maxSize !== null ? Math.max(s.maxSize, used) : Math.max(used, 1);
  bar.children[0].style.width = ((100 * s.pinnedBytes) / bound).toFixed(2) + '%';
  bar.children[1].style.width = ((100 * s.cachedBytes) / bound).toFixed(2) + '%';
  text('store-detail', 'cached ' + bytes(s.cachedBytes) + ' in ' + s.cachedCount + ' · pinned ' + bytes(s.pinnedBytes) + ' in ' + s.pinnedCount +
    (s.maxSize === null ? ' · no maxSize (unbounded)' : '') + ' · ' + s.evictions + ' evicted' + (s.clusterBytes !== null ? ' · cluster store ' + bytes(s.clusterBytes) : ''));

  const hr = st.hour;
  const answered = hr.buckets.reduce((n, b) => n + b.fromStore + b.fetched, 0);
  const fromStore = hr.buckets.reduce((n, b) => n + b.fromStore, 0);
  text('hit-ratio', hr.hitRatio === null ? '–' : (100 * hr.hitRatio).toFixed(1) + ' %');
  text('hit-detail', fromStore + ' of ' + answered + ' cacheable answers came from the store');
  text('store-bytes', bytes(hr.storeBytes));
  text('upstream-bytes', bytes(hr.upstreamBytes));
  text('requests', String(hr.requests));
  text('errors-count', hr.errors + ' errors');
  chart('chart-answers', hr.buckets, 'fromStore', 'fetched', (v) => v + ' answers');
  chart('chart-bytes', hr.buckets, 'storeBytes', 'upstreamBytes', bytes);

  const sources = [];
  for (const u of st.upstreams) for (const src of u.sources) sources.push({ u, src });
  fillTable('upstreams', sources, 'no upstreams configured', ({ u, src }, tr) => {
    cell(tr, u.name);
    cell(tr, u.sources.length > 1 ? src.name + ' (' + src.url + ')' : src.url);
    cell(tr, sourceState(src));
    cell(tr, String(src.health.breaker.failures));
    cell(tr, src.health.coolDown ? 'until ' + clock(src.health.coolDown.until) + ' (' + src.health.coolDown.reason + ')' : '–');
    const q = src.health.quota;
    cell(tr, q ? q.remaining + (q.limit !== null ? ' of ' + q.limit : '') + (q.low ? ' (low: tags revalidated less often)' : '') : 'not reported', q && q.low ? 'warn' : '');
    const c = src.credentials;
    cell(tr, c ? (c.lastError ? c.source + ': ' + c.lastError : c.source + ' · fetched ' + c.fetches + '×') : '–', c && c.lastError ? 'bad' : '');
  });

  fillTable('downloads', st.downloads, 'none right now', (d, tr) => {
    cell(tr, d.repository);
    cell(tr, d.digest.slice(0, 19) + '…', 'mono');
    cell(tr, progress(d.written, d.size));
    cell(tr, String(d.followers));
    cell(tr, String(d.attempts));
    cell(tr, duration(st.now - d.startedAt));
  });

  fillTable('gone', st.gone, 'no cached tag was deleted upstream', (g, tr) => {
    cell(tr, g.repository);
    cell(tr, g.tag);
    cell(tr, g.digest.slice(0, 19) + '…', 'mono');
    cell(tr, bytes(g.bytes) + ' in ' + g.blobs + ' blobs');
    cell(tr, new Date(g.since).toISOString().replace(/\.\d+Z$/, 'Z') + ' (' + duration(st.now - g.since) + ' ago)', 'warn');
  });

  fillTable('top-pulls', st.topByPulls, 'no pulls yet', (r, tr) => {
    cell(tr, r.repository);
    cell(tr, String(r.pulls));
    cell(tr, bytes(r.bytes));
  });
  fillTable('top-bytes', st.topByBytes, 'nothing served yet', (r, tr) => {
    cell(tr, r.repository);
    cell(tr, bytes(r.bytes));
    cell(tr, String(r.pulls));
  });

  // server.workers above 1: the figures above are the host's; each worker's own here.
  document.getElementById('workers-section').hidden = !st.workers;
  if (st.workers) {
    fillTable('workers', st.workers, 'no worker answered', (w, tr) => {
      cell(tr, w.worker);
      cell(tr, String(w.pid), 'mono');
      cell(tr, bytes(w.rssBytes));
      cell(tr, bytes(w.heapUsedBytes));
      cell(tr, String(w.requests));
      cell(tr, String(w.downloads));
      cell(tr, duration(st.now - w.startedAt));
    });
  }

  const cl = document.getElementById('cluster-section');
  cl.hidden = !st.cluster && !st.peers;
  const parts = [];
  if (st.cluster && st.cluster.coordinator === 'ipc') parts.push('workers of store ' + st.cluster.storeId + ', coordinated by their supervisor (this answer: ' + st.cluster.replicaId + ')');
  else if (st.cluster) parts.push('replica ' + st.cluster.replicaId + ' of store ' + st.cluster.storeId + ' · Redis ' + (st.cluster.redisUp ? 'up' : 'DOWN: serving without coordination'));
  if (st.peers) parts.push('node ' + st.peers.self + ' in peer group ' + st.peers.group + ' · transfers ' + Object.entries(st.peers.transfers).map(([k, v]) => k + ' ' + v).join(', '));
  text('cluster', parts.join(' — '));

  // verify policies in warn mode: what was served although it is unsigned or wrongly signed.
  document.getElementById('unverified-section').hidden = !st.unverified;
  if (st.unverified) {
    fillTable('unverified', st.unverified, 'nothing served without a valid signature', (u, tr) => {
      cell(tr, u.repository);
      const digest = cell(tr, u.digest.slice(0, 19) + '…', 'mono');
      digest.title = u.digest;
      cell(tr, u.policy, 'mono');
      cell(tr, u.reason, 'warn');
      const last = cell(tr, clock(u.lastAt));
      last.title = 'first served ' + new Date(u.firstAt).toLocaleString();
      cell(tr, String(u.count));
    });
  }

  fillTable('errors', st.errors, 'no errors', (e, tr) => {
    cell(tr, clock(e.at));
    cell(tr, String(e.status), e.status >= 500 ? 'bad' : 'warn');
    cell(tr, e.code, 'mono');
    cell(tr, e.message);
    cell(tr, e.method + ' ' + e.path, 'mono');
  });
}

let failures = 0;
async function poll() {
  const live = document.getElementById('live');
  try {
    const res = await fetch('/ui/api/state', { cache: 'no-store', credentials: 'same-origin' });
    if (!res.ok) throw new Error('the server answered ' + res.status);
    render(await res.json());
    failures = 0;
    live.textContent = 'live · ' + new Date().toLocaleTimeString();
    live.className = 'live ok';
    document.body.dataset.ready = '1';
  } catch (err) {
    failures++;
    live.textContent = 'not updating: ' + (err && err.message ? err.message : String(err));
    live.className = 'live bad';
  }
  setTimeout(poll, failures > 0 ? Math.min(30000, POLL_MS * 2 ** Math.min(failures, 4)) : POLL_MS);
}

poll();
