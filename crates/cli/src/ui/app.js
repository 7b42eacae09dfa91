// The wasi-observe web UI: plain JavaScript over the JSON API of
// `wasi-observe ui`. Every value from the store is inserted as text (never
// as HTML), since it comes from guests.
'use strict';

const main = document.getElementById('main');
const COLORS = ['#2f6fde', '#d9822b', '#2d9d5a', '#8e44ad', '#d33a2c', '#16a2b8', '#7f8c8d', '#c0392b'];

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'style') el.style.cssText = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : String(kid));
  }
  return el;
}

function svg(tag, attrs, ...kids) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  for (const kid of kids.flat()) el.append(kid instanceof Node ? kid : String(kid));
  return el;
}

async function api(path) {
  const r = await fetch(path);
  if (!r.ok) throw new Error(`${r.status}: ${await r.text()}`);
  return r.json();
}

function fmtDur(ns) {
  if (ns < 1e3) return `${ns}ns`;
  if (ns < 1e6) return `${(ns / 1e3).toFixed(1).replace(/\.0$/, '')}µs`;
  if (ns < 1e9) return `${(ns / 1e6).toFixed(2)}ms`;
  if (ns < 60e9) return `${(ns / 1e9).toFixed(2)}s`;
  const s = Math.floor(ns / 1e9);
  const two = (n) => String(n).padStart(2, '0');
  if (s < 3600) return `${Math.floor(s / 60)}m${two(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${two(Math.floor((s % 3600) / 60))}m`;
  return `${Math.floor(s / 86400)}d${two(Math.floor((s % 86400) / 3600))}h`;
}

function fmtTime(ns) {
  const d = new Date(ns / 1e6);
  return isNaN(d) ? String(ns) : d.toISOString().replace('T', ' ').slice(0, 23);
}

function fmtValue(v) {
  return typeof v === 'string' ? v : JSON.stringify(v);
}

// `n word`, or `n words` but for one.
function plural(n, word) {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

// A log record's attributes as `key=value` (text quoted), shown after its
// message as `tracing`'s formatter prints an event's fields: a record of
// fields alone (`#[instrument(err)]`'s `error`) is then not a blank row.
function logFields(l) {
  return Object.entries(l.attributes || {}).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(' ');
}

function logMessage(l) {
  const fields = logFields(l);
  return [l.body, fields ? h('span', { class: 'muted log-fields' }, `${l.body ? ' ' : ''}${fields}`) : null];
}

function kv(obj) {
  const entries = Object.entries(obj || {});
  if (!entries.length) return h('p', { class: 'muted' }, 'none');
  return h('dl', { class: 'kv' }, entries.map(([k, v]) => [h('dt', {}, k), h('dd', {}, fmtValue(v))]));
}

function hashQuery() {
  const i = location.hash.indexOf('?');
  return new URLSearchParams(i >= 0 ? location.hash.slice(i + 1) : '');
}

function setNav(which) {
  for (const n of ['traces', 'logs', 'metrics']) {
    document.getElementById(`nav-${n}`).classList.toggle('active', n === which);
  }
}

function showError(e) {
  main.replaceChildren(h('p', { class: 'err', id: 'error' }, String(e.message || e)));
}

async function serviceOptions(selected) {
  const services = await api('/api/services').catch(() => []);
  return [h('option', { value: '' }, 'all services'),
    services.map((s) => h('option', { value: s, selected: s === selected }, s))];
}

// ---------------------------------------------------------------- traces

async function renderTraces() {
  setNav('traces');
  const q = hashQuery();
  const form = h('form', { class: 'filters', id: 'trace-filters' },
    h('input', { id: 'f-q', name: 'q', placeholder: 'root span or trace id', value: q.get('q') || '' }),
    h('select', { id: 'f-service', name: 'service' }, await serviceOptions(q.get('service'))),
    h('input', { id: 'f-name', name: 'name', placeholder: 'has span named…', value: q.get('name') || '' }),
    h('input', { id: 'f-min', name: 'min_ms', type: 'number', min: '0', step: 'any', placeholder: 'min ms', value: q.get('min_ms') || '', style: 'width:90px' }),
    h('label', {}, h('input', { id: 'f-errors', name: 'errors', type: 'checkbox', value: '1', checked: q.get('errors') === '1' }), ' errors only'),
    h('label', {}, h('input', { id: 'f-slowest', name: 'slowest', type: 'checkbox', value: '1', checked: q.get('slowest') === '1' }), ' slowest first'),
    h('button', { id: 'f-submit', type: 'submit' }, 'Search'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const params = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) params.set(k, v);
    location.hash = `#/traces?${params}`;
  });
  const tbody = h('tbody');
  const table = h('table', { id: 'trace-list' },
    h('thead', {}, h('tr', {}, h('th', {}, 'Root span'), h('th', {}, 'Service'), h('th', {}, 'Start (UTC)'),
      h('th', { class: 'num' }, 'Duration'), h('th', { class: 'num' }, 'Spans'), h('th', { class: 'num' }, 'Errors'), h('th', {}, 'Trace'))),
    tbody);
  const more = h('button', { id: 'more', type: 'button', style: 'margin-top:10px' }, 'Load more');
  main.replaceChildren(form, table, more);
  let last = null;
  async function load() {
    const params = new URLSearchParams(q);
    params.set('limit', '100');
    if (last !== null) params.set('before', String(last));
    const traces = await api(`/api/traces?${params}`);
    for (const t of traces) {
      tbody.append(h('tr', { class: 'trace-row clickable', 'data-trace-id': t.trace_id, onclick: () => { location.hash = `#/trace/${t.trace_id}`; } },
        h('td', { class: 'root-name' }, t.root_name),
        h('td', {}, t.service),
        h('td', { class: 'mono' }, fmtTime(t.start_ns)),
        h('td', { class: 'num' }, fmtDur(t.duration_ns)),
        h('td', { class: 'num' }, t.span_count),
        h('td', { class: 'num' }, t.error_count ? h('span', { class: 'badge error' }, t.error_count) : '0'),
        h('td', { class: 'mono muted' }, t.trace_id.slice(0, 12))));
    }
    if (!traces.length && last === null) tbody.append(h('tr', {}, h('td', { colspan: 7, class: 'empty' }, 'No traces match.')));
    more.hidden = traces.length < 100 || q.get('slowest') === '1';
    if (traces.length) last = traces[traces.length - 1].start_ns;
  }
  more.addEventListener('click', () => load().catch(showError));
  await load();
}

// ---------------------------------------------------------------- one trace

// Spans as a tree (children by start time), each log under its span.
function waterfall(trace) {
  const index = new Map(trace.spans.map((s, i) => [s.span_id, i]));
  const children = new Map();
  const add = (parent, item) => {
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(item);
  };
  trace.spans.forEach((s, i) => {
    const p = index.has(s.parent_span_id) && index.get(s.parent_span_id) !== i ? index.get(s.parent_span_id) : -1;
    add(p, { t: s.start_ns, span: i });
  });
  trace.logs.forEach((l, i) => add(index.has(l.span_id) ? index.get(l.span_id) : -1, { t: l.time_ns, log: i }));
  for (const list of children.values()) list.sort((a, b) => a.t - b.t);
  const rows = [];
  const seen = new Set();
  const stack = [[children.get(-1) || [], 0, 0]];
  while (stack.length) {
    const [list, pos, depth] = stack.pop();
    if (pos >= list.length) continue;
    stack.push([list, pos + 1, depth]);
    const item = list[pos];
    if (item.log !== undefined) rows.push({ log: item.log, depth });
    else if (!seen.has(item.span)) {
      seen.add(item.span);
      rows.push({ span: item.span, depth });
      stack.push([children.get(item.span) || [], 0, depth + 1]);
    }
  }
  trace.spans.forEach((_, i) => { if (!seen.has(i)) rows.push({ span: i, depth: 0 }); });
  return rows;
}

function spanDetail(trace, span) {
  const logs = trace.logs.filter((l) => l.span_id === span.span_id);
  const status = span.status_code === 'error'
    ? h('span', { class: 'badge error' }, `error${span.status_message ? `: ${span.status_message}` : ''}`)
    : h('span', { class: 'badge' }, span.status_code);
  const dropped = Object.entries(span.dropped || {}).filter(([, n]) => n > 0);
  return [
    h('h3', { id: 'detail-name' }, span.name),
    h('p', {}, h('span', { class: 'badge' }, span.kind), ' ', status),
    h('dl', { class: 'kv' },
      h('dt', {}, 'span id'), h('dd', { id: 'detail-span-id' }, span.span_id),
      h('dt', {}, 'parent'), h('dd', {}, span.parent_span_id || '—'),
      h('dt', {}, 'service'), h('dd', {}, span.service),
      h('dt', {}, 'scope'), h('dd', {}, span.scope || '—'),
      h('dt', {}, 'start'), h('dd', {}, fmtTime(span.start_ns)),
      h('dt', {}, 'duration'), h('dd', {}, fmtDur(span.duration_ns)),
      dropped.length ? [h('dt', {}, 'dropped'), h('dd', {}, dropped.map(([k, n]) => `${n} ${k}`).join(', '))] : null),
    h('h4', {}, 'Attributes'), h('div', { id: 'detail-attributes' }, kv(span.attributes)),
    h('h4', {}, `Events (${span.events.length})`),
    h('div', { id: 'detail-events' }, span.events.length ? span.events.map((e) => h('div', { class: 'event' },
      h('strong', {}, e.name), ' ', h('span', { class: 'muted' }, `+${fmtDur(e.time_ns - span.start_ns)}`), kv(e.attributes))) : h('p', { class: 'muted' }, 'none')),
    h('h4', {}, `Links (${span.links.length})`),
    h('div', { id: 'detail-links' }, span.links.length ? span.links.map((l) => h('div', { class: 'link' },
      h('a', { href: `#/trace/${l.trace_id}`, class: 'mono' }, `${l.trace_id} / ${l.span_id}`), kv(l.attributes))) : h('p', { class: 'muted' }, 'none')),
    h('h4', {}, `Logs (${logs.length})`),
    h('div', { id: 'detail-logs' }, logs.length ? logs.map((l) => h('div', { class: 'log' },
      h('span', { class: `sev-${l.severity_text}` }, l.severity_text || '-'), ' ',
      h('span', { class: 'muted' }, `+${fmtDur(l.time_ns - span.start_ns)} [${l.target}] `), ...logMessage(l))) : h('p', { class: 'muted' }, 'none')),
    h('h4', {}, 'Resource'), kv(span.resource),
  ];
}

async function renderTrace(id) {
  setNav('traces');
  const trace = await api(`/api/traces/${encodeURIComponent(id)}`);
  const t0 = trace.start_ns;
  const total = Math.max(trace.duration_ns, 1);
  const detail = h('aside', { id: 'span-detail' }, h('p', { class: 'muted' }, 'Click a span to see its attributes, events, links and logs.'));
  // A browser handles a few thousand rows well; a burst of 100k spans is
  // cut, and says so (the terminal view and --json show all).
  const MAX_ROWS = 5000;
  const all = waterfall(trace);
  const rows = all.slice(0, MAX_ROWS).map((r) => {
    if (r.log !== undefined) {
      const l = trace.logs[r.log];
      const fields = logFields(l);
      return h('div', { class: 'log-row', 'data-log-id': l.id, title: fields ? `${l.body} ${fields}` : l.body },
        h('div', { class: 'span-name', style: `padding-left:${8 + r.depth * 16}px` },
          h('span', { class: `sev-${l.severity_text}` }, l.severity_text || '-'), ' ', ...logMessage(l)),
        h('div', { class: 'span-track' }, h('div', { class: 'span-bar', style: `left:${(100 * (l.time_ns - t0)) / total}%;width:2px;background:#999` })),
        h('div', { class: 'span-dur' }, `+${fmtDur(l.time_ns - t0)}`));
    }
    const s = trace.spans[r.span];
    const left = (100 * (s.start_ns - t0)) / total;
    const width = Math.max((100 * s.duration_ns) / total, 0.3);
    const row = h('div', { class: 'span-row', 'data-span-id': s.span_id, title: s.name },
      h('div', { class: 'span-name', style: `padding-left:${8 + r.depth * 16}px` },
        s.status_code === 'error' ? h('span', { class: 'err' }, '✗ ') : s.status_code === 'ok' ? h('span', { class: 'ok' }, '✓ ') : null,
        s.name),
      h('div', { class: 'span-track' }, h('div', { class: `span-bar${s.status_code === 'error' ? ' error' : ''}`, style: `left:${Math.min(left, 99.7)}%;width:${Math.min(width, 100 - Math.min(left, 99.7))}%` })),
      h('div', { class: 'span-dur' }, fmtDur(s.duration_ns)));
    row.addEventListener('click', () => {
      for (const el of document.querySelectorAll('.span-row.selected')) el.classList.remove('selected');
      row.classList.add('selected');
      detail.replaceChildren(...spanDetail(trace, s));
    });
    return row;
  });
  main.replaceChildren(
    h('div', { class: 'trace-head' },
      h('p', {}, h('a', { href: '#/traces', id: 'back' }, '← all traces')),
      h('h2', { id: 'trace-title' }, trace.root_name),
      h('p', { class: 'muted' },
        h('span', { class: 'mono', id: 'trace-id' }, trace.trace_id), ` · ${trace.service} · ${fmtTime(trace.start_ns)} UTC · ${fmtDur(trace.duration_ns)} · ${plural(trace.span_count, 'span')}`,
        trace.error_count ? h('span', { class: 'err' }, ` · ${plural(trace.error_count, 'error')}`) : null,
        ` · ${plural(trace.logs.length, 'log')}`)),
    h('div', { class: 'layout' }, h('div', { id: 'waterfall' }, rows,
      all.length > MAX_ROWS ? h('p', { class: 'muted', style: 'padding:8px' },
        `Showing the first ${MAX_ROWS} of ${all.length} rows; \`wasi-observe trace ${trace.trace_id}\` shows them all.`) : null), detail));
}

// ---------------------------------------------------------------- logs

async function renderLogs() {
  setNav('logs');
  const q = hashQuery();
  const levels = ['', 'trace', 'debug', 'info', 'warn', 'error', 'critical'];
  const form = h('form', { class: 'filters', id: 'log-filters' },
    h('select', { id: 'l-level', name: 'level' }, levels.map((l) => h('option', { value: l, selected: l === (q.get('level') || '') }, l || 'any level'))),
    h('select', { id: 'l-service', name: 'service' }, await serviceOptions(q.get('service'))),
    h('input', { id: 'l-trace', name: 'trace', placeholder: 'trace id', value: q.get('trace') || '' }),
    h('input', { id: 'l-q', name: 'q', placeholder: 'message contains…', value: q.get('q') || '' }),
    h('button', { type: 'submit' }, 'Search'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const params = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) params.set(k, v);
    location.hash = `#/logs?${params}`;
  });
  const logs = await api(`/api/logs?${q}`);
  const body = logs.length ? logs.map((l) => h('tr', { class: 'log-entry' },
    h('td', { class: 'mono' }, fmtTime(l.time_ns)),
    h('td', { class: `sev-${l.severity_text}` }, l.severity_text || '-'),
    h('td', {}, l.service), h('td', { class: 'mono muted' }, l.target),
    h('td', {}, l.body, Object.keys(l.attributes || {}).length ? h('div', { class: 'muted mono' }, JSON.stringify(l.attributes)) : null),
    h('td', { class: 'mono' }, l.trace_id ? h('a', { href: `#/trace/${l.trace_id}` }, l.trace_id.slice(0, 12)) : ''))) :
    h('tr', {}, h('td', { colspan: 6, class: 'empty' }, 'No log records match.'));
  main.replaceChildren(form, h('table', { id: 'log-list' },
    h('thead', {}, h('tr', {}, ['Time (UTC)', 'Level', 'Service', 'Target', 'Message', 'Trace'].map((c) => h('th', {}, c)))),
    h('tbody', {}, body)));
}

// ---------------------------------------------------------------- metrics

function chart(name, unit, points) {
  const W = 720, H = 180, L = 60, R = 10, T = 10, B = 26;
  const series = new Map();
  for (const p of points) {
    const attrs = Object.entries(p.attributes || {}).map(([k, v]) => `${k}=${fmtValue(v)}`).join(' ');
    const key = attrs ? `${p.service} ${attrs}` : p.service;
    if (!series.has(key)) series.set(key, []);
    series.get(key).push(p);
  }
  const xs = points.map((p) => p.time_ns), ys = points.map((p) => p.value);
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(0, ...ys), y1 = Math.max(...ys, y0 + 1e-9);
  const X = (x) => L + (x1 === x0 ? (W - L - R) / 2 : ((x - x0) / (x1 - x0)) * (W - L - R));
  const Y = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - T - B);
  const g = svg('svg', { viewBox: `0 0 ${W} ${H}`, width: '100%', style: `max-width:${W}px`, class: 'chart-svg', 'data-metric': name },
    svg('line', { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: '#ccd' }),
    svg('line', { x1: L, y1: T, x2: L, y2: H - B, stroke: '#ccd' }),
    svg('text', { x: L - 6, y: T + 10, 'text-anchor': 'end', 'font-size': 11, fill: '#6b7686' }, String(+y1.toPrecision(4))),
    svg('text', { x: L - 6, y: H - B, 'text-anchor': 'end', 'font-size': 11, fill: '#6b7686' }, String(+y0.toPrecision(4))),
    svg('text', { x: L, y: H - 6, 'font-size': 11, fill: '#6b7686' }, fmtTime(x0)),
    svg('text', { x: W - R, y: H - 6, 'text-anchor': 'end', 'font-size': 11, fill: '#6b7686' }, fmtTime(x1)));
  let i = 0;
  const legend = [];
  for (const [key, pts] of series) {
    const color = COLORS[i++ % COLORS.length];
    if (pts.length > 1) g.append(svg('polyline', { fill: 'none', stroke: color, 'stroke-width': 2, points: pts.map((p) => `${X(p.time_ns)},${Y(p.value)}`).join(' ') }));
    for (const p of pts) g.append(svg('circle', { cx: X(p.time_ns), cy: Y(p.value), r: 3, fill: color }, svg('title', {}, `${fmtTime(p.time_ns)}: ${p.value}`)));
    legend.push(h('span', { style: `color:${color}` }, `● ${key}`));
  }
  return h('section', { class: 'chart', id: `chart-${name}` },
    h('h3', {}, name, unit ? h('span', { class: 'muted' }, ` (${unit})`) : null),
    g, h('div', { class: 'legend' }, legend));
}

async function renderMetrics() {
  setNav('metrics');
  const current = await api('/api/metrics');
  if (!current.length) {
    main.replaceChildren(h('p', { class: 'empty' }, 'No metrics recorded.'));
    return;
  }
  const charts = h('div', { id: 'charts' });
  const table = h('table', { id: 'metric-list' },
    h('thead', {}, h('tr', {}, ['Instrument', 'Kind', 'Service', 'Attributes', 'Value', 'Updated (UTC)'].map((c) => h('th', {}, c)))),
    h('tbody', {}, current.map((p) => h('tr', { class: 'metric-row clickable', onclick: () => document.getElementById(`chart-${p.name}`)?.scrollIntoView() },
      h('td', {}, p.name), h('td', {}, p.kind), h('td', {}, p.service),
      h('td', { class: 'mono' }, Object.entries(p.attributes || {}).map(([k, v]) => `${k}=${fmtValue(v)}`).join(' ') || '—'),
      h('td', { class: 'num metric-value' }, p.count !== null && p.count !== undefined
        ? `count ${p.count} · sum ${p.value}${p.min !== null ? ` · min ${p.min} · max ${p.max}` : ''}` : String(p.value), p.unit ? ` ${p.unit}` : ''),
      h('td', { class: 'mono' }, fmtTime(p.time_ns))))));
  main.replaceChildren(table, h('h2', { style: 'font-size:16px' }, 'Over time'), charts);
  const names = [...new Set(current.map((p) => p.name))].slice(0, 30);
  for (const name of names) {
    const points = await api(`/api/metrics/${encodeURIComponent(name)}`);
    if (points.length) charts.append(chart(name, points[0].unit, points));
  }
}

// ---------------------------------------------------------------- router

async function route() {
  const path = location.hash.replace(/^#/, '').split('?')[0] || '/traces';
  try {
    if (path.startsWith('/trace/')) await renderTrace(decodeURIComponent(path.slice(7)));
    else if (path === '/logs') await renderLogs();
    else if (path === '/metrics') await renderMetrics();
    else await renderTraces();
  } catch (e) {
    showError(e);
  }
}

api('/api/stats').then((s) => {
  document.getElementById('store-info').textContent =
    `${plural(s.counts.traces, 'trace')} · ${plural(s.counts.spans, 'span')} · ${plural(s.counts.logs, 'log')} · ${s.path}`;
}).catch(() => {});
window.addEventListener('hashchange', route);
route();
