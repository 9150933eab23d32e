// Vigil console: vanilla JavaScript, no build step, no outside resources.
// Every value from the API reaches the page through textContent or SVG
// attributes, never as HTML.
'use strict';

const API = '/api/v1';
const TOKEN_KEY = 'vigil.token';
const SVGNS = 'http://www.w3.org/2000/svg';
const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#e377c2', '#17becf', '#bcbd22', '#7f7f7f'];

let me = null;          // the signed-in user (whoami)
let stopLive = null;    // stops the current page's live stream
let routeGen = 0;       // counts route() calls: a page whose route was overtaken must not draw or stream
const LIVE_ROWS = 500;  // past this many rows, each streamed finding drops the oldest row

// ---- DOM helpers ----

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'href') el.setAttribute('href', String(v).startsWith('#') ? v : '#/');
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === undefined || kid === null || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

function s(tag, attrs, ...kids) {
  const el = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'text') el.textContent = v; else el.setAttribute(k, String(v));
  }
  for (const kid of kids.flat(Infinity)) if (kid) el.append(kid);
  return el;
}

function toast(msg) {
  const t = document.getElementById('toast');
  t.textContent = msg;
  t.classList.add('show');
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.remove('show'), 3000);
}

function fmtTime(iso) {
  if (!iso || iso.startsWith('0001-')) return '–';
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

function badge(cls, text) { return h('span', { class: 'badge ' + cls, text }); }
function sevBadge(sev) { return badge('sev-' + sev, sev); }
function statusBadge(st) { return badge('st-' + (st || 'new'), (st || 'new').replace('_', ' ')); }
function healthBadge(hs) { return badge('h-' + hs, hs); }

// ---- API ----

function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }

class APIError extends Error {
  constructor(status, msg) { super(msg); this.status = status; }
}

async function api(path, opts = {}) {
  const headers = { Authorization: 'Bearer ' + token(), Accept: 'application/json' };
  let body;
  if (opts.body !== undefined) { headers['Content-Type'] = 'application/json'; body = JSON.stringify(opts.body); }
  const resp = await fetch(API + path, { method: opts.method || 'GET', headers, body, cache: 'no-store', signal: opts.signal });
  let data = null;
  try { data = await resp.json(); } catch (e) { /* not JSON */ }
  if (resp.status === 401) {
    if (!opts.quiet) signOut('Your token was refused; sign in again.');
    throw new APIError(401, 'unauthorized');
  }
  if (!resp.ok) throw new APIError(resp.status, (data && data.error) || resp.statusText);
  return data;
}

// liveFindings follows GET /findings/stream with fetch() (EventSource cannot
// send the bearer header, and the token must never be put in a URL). It
// reconnects with the last id seen, so nothing is missed across a drop.
function liveFindings(params, after, onFinding, onState) {
  const ctrl = new AbortController();
  let last = after;
  (async () => {
    while (!ctrl.signal.aborted) {
      try {
        const q = new URLSearchParams(params);
        if (last) q.set('after', last);
        const resp = await fetch(API + '/findings/stream?' + q, {
          headers: { Authorization: 'Bearer ' + token(), Accept: 'text/event-stream' }, signal: ctrl.signal, cache: 'no-store' });
        if (resp.status === 401) { signOut('Your token was refused; sign in again.'); return; }
        if (!resp.ok) throw new Error('stream ' + resp.status);
        onState('live');
        const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let i;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, i); buf = buf.slice(i + 2);
            let ev = 'message', id = '', data = '';
            for (const line of block.split('\n')) {
              const m = /^: vigil live findings after (\d+)$/.exec(line);
              if (m && !last) last = m[1];
              if (line.startsWith('id: ')) id = line.slice(4);
              else if (line.startsWith('event: ')) ev = line.slice(7);
              else if (line.startsWith('data: ')) data += line.slice(6);
            }
            if (ev === 'finding' && data) {
              if (id) last = id;
              try { onFinding(JSON.parse(data)); } catch (e) { console.warn('bad event', e); }
            }
          }
        }
      } catch (e) {
        if (ctrl.signal.aborted) return;
      }
      onState('reconnecting');
      await new Promise(r => setTimeout(r, 2000));
    }
  })();
  return () => ctrl.abort();
}

// ---- session ----

function signOut(msg) {
  sessionStorage.removeItem(TOKEN_KEY);
  me = null;
  if (stopLive) { stopLive(); stopLive = null; }
  document.getElementById('nav').hidden = true;
  document.getElementById('signout').hidden = true;
  document.getElementById('who').textContent = '';
  location.hash = '#/login';
  if (msg) toast(msg);
  route();
}

async function ensureUser() {
  if (me) return me;
  if (!token()) return null;
  try { me = await api('/whoami', { quiet: true }); } catch (e) { return null; }
  document.getElementById('nav').hidden = false;
  document.getElementById('signout').hidden = false;
  document.getElementById('who').textContent = me.name + ' · ' + me.role + (me.entity ? ' · ' + me.entity : '');
  return me;
}

function isCERT() { return me && me.role !== 'entity-admin'; }

// ---- router ----

const pages = {};

async function route() {
  const gen = ++routeGen;
  if (stopLive) { stopLive(); stopLive = null; }
  const main = document.getElementById('main');
  const hash = location.hash || '#/findings';
  const [path, qs] = hash.slice(1).split('?');
  const parts = path.split('/').filter(Boolean);
  const user = await ensureUser();
  if (gen !== routeGen) return;
  // Signing out routes at once and again on the hash change: keep the form
  // that is already there (and what is typed into it).
  if (!user) { if (!document.getElementById('signin-form')) main.replaceChildren(signInPage()); return; }
  if (parts[0] === 'login') { location.hash = '#/findings'; return; }
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.page === parts[0]);
  const page = pages[parts[0]] || pages.findings;
  main.replaceChildren(h('p', { class: 'muted', text: 'Loading…' }));
  try {
    await page(main, parts.slice(1), new URLSearchParams(qs || ''));
  } catch (e) {
    if (gen === routeGen) main.replaceChildren(h('p', { class: 'error', text: 'Error: ' + e.message }));
  }
}

function signInPage() {
  const input = h('input', { id: 'token', type: 'password', autocomplete: 'off', placeholder: 'vgu_…', 'aria-label': 'API token' });
  const err = h('p', { class: 'error', id: 'signin-error' });
  const form = h('form', { class: 'card signin', id: 'signin-form' },
    h('h1', { text: 'Sign in' }),
    h('p', { class: 'muted', text: 'Paste your Vigil API token. It is kept in this tab only and sent to this server only.' }),
    input, h('button', { id: 'signin', type: 'submit', text: 'Sign in' }), err);
  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    const t = input.value.trim();
    if (!/^vgu_[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(t)) { err.textContent = 'That does not look like a Vigil API token.'; return; }
    sessionStorage.setItem(TOKEN_KEY, t);
    me = null;
    if (!(await ensureUser())) { sessionStorage.removeItem(TOKEN_KEY); err.textContent = 'The server refused this token.'; return; }
    location.hash = '#/findings';
    route();
  });
  return form;
}

// ---- findings list ----

const SINCE = [['1h', 'last hour'], ['24h', 'last 24 h'], ['168h', 'last 7 days'], ['720h', 'last 30 days'], ['', 'all time']];

function findingRow(f, fresh) {
  return h('tr', { class: fresh ? 'fresh' : '', 'data-id': f.id },
    h('td', {}, h('a', { href: '#/finding/' + f.id, class: 'finding-link', text: String(f.id) })),
    h('td', { text: fmtTime(f.time) }),
    h('td', { text: f.entity }), h('td', { text: f.agent_id }), h('td', { text: f.detector }),
    h('td', {}, sevBadge(f.severity)), h('td', { text: Number(f.score).toFixed(3) }),
    h('td', {}, statusBadge(f.status)), h('td', { text: f.summary }));
}

pages.findings = async (main, _parts, qs) => {
  const gen = routeGen;
  const filt = {};
  for (const k of ['entity', 'agent', 'detector', 'severity', 'status', 'since']) if (qs.get(k)) filt[k] = qs.get(k);
  const entities = (await api('/entities')).entities;
  if (gen !== routeGen) return;
  const sel = (id, label, opts, val) => h('label', {}, label,
    h('select', { id }, opts.map(([v, t]) => { const o = h('option', { value: v, text: t }); if (v === (val || '')) o.selected = true; return o; })));
  const txt = (id, label, val) => h('label', {}, label, h('input', { id, value: val || '', size: 14 }));
  const form = h('form', { class: 'filters', id: 'filters' },
    isCERT() ? sel('filter-entity', 'Entity', [['', 'all']].concat(entities.map(e => [e, e])), filt.entity) : null,
    txt('filter-agent', 'Agent', filt.agent), txt('filter-detector', 'Detector', filt.detector),
    sel('filter-severity', 'Min. severity', [['', 'any'], ['low', 'low'], ['medium', 'medium'], ['high', 'high'], ['critical', 'critical']], filt.severity),
    sel('filter-status', 'Status', [['', 'any'], ['new', 'new'], ['acknowledged', 'acknowledged'], ['false_positive', 'false positive'], ['resolved', 'resolved']], filt.status),
    sel('filter-since', 'Time', SINCE, filt.since === undefined ? '' : filt.since),
    h('button', { id: 'filter-apply', type: 'submit', text: 'Apply' }),
    h('a', { href: '#/findings', text: 'clear' }));
  form.addEventListener('submit', ev => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const [k, id] of [['entity', 'filter-entity'], ['agent', 'filter-agent'], ['detector', 'filter-detector'],
      ['severity', 'filter-severity'], ['status', 'filter-status'], ['since', 'filter-since']]) {
      const el = document.getElementById(id);
      if (el && el.value.trim()) q.set(k, el.value.trim());
    }
    location.hash = '#/findings' + (q.toString() ? '?' + q : '');
  });
  const tbody = h('tbody');
  const table = h('table', { id: 'findings' }, h('thead', {}, h('tr', {},
    ['ID', 'Time', 'Entity', 'Agent', 'Detector', 'Severity', 'Score', 'Status', 'Summary'].map(t => h('th', { text: t })))), tbody);
  const live = h('span', { id: 'live-state', text: 'connecting…' });
  const more = h('button', { id: 'more', class: 'secondary', type: 'button', text: 'Load more', hidden: true });
  const exportLinks = h('span', { class: 'muted' }, ' Export: ',
    h('button', { class: 'secondary', type: 'button', id: 'export-jsonl', text: 'JSON lines', onclick: () => download('jsonl') }), ' ',
    h('button', { class: 'secondary', type: 'button', id: 'export-ocsf', text: 'OCSF', onclick: () => download('ocsf') }));
  main.replaceChildren(h('h1', {}, 'Findings', live), form, table, h('p', {}, more, exportLinks));

  const seen = new Set();
  let cursor = '';
  async function load() {
    const q = new URLSearchParams(filt);
    q.set('limit', '100');
    if (cursor) q.set('cursor', cursor);
    const r = await api('/findings?' + q);
    for (const f of r.findings) if (!seen.has(f.id)) { seen.add(f.id); tbody.append(findingRow(f, false)); }
    cursor = r.next_cursor || '';
    more.hidden = !cursor;
    if (!tbody.children.length) tbody.append(h('tr', { class: 'empty' }, h('td', { colspan: 9, class: 'muted', text: 'No findings match.' })));
  }
  more.addEventListener('click', () => load().catch(e => toast(e.message)));
  async function download(format) {
    const q = new URLSearchParams(filt);
    q.delete('since');
    if (filt.since) q.set('since', filt.since);
    q.set('format', format);
    const resp = await fetch(API + '/findings/export?' + q, { headers: { Authorization: 'Bearer ' + token() } });
    if (!resp.ok) { toast('Export failed: ' + resp.status); return; }
    const url = URL.createObjectURL(await resp.blob());
    const a = h('a', {});
    a.href = url; a.download = format === 'ocsf' ? 'vigil-findings.ocsf.jsonl' : 'vigil-findings.jsonl';
    document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }
  await load();
  if (gen !== routeGen) return;
  const top = tbody.querySelector('tr[data-id]');
  const streamParams = Object.assign({}, filt);
  delete streamParams.since; // new findings are always recent
  if (streamParams.status && streamParams.status !== 'new') return; // new findings are never triaged yet
  delete streamParams.status;
  stopLive = liveFindings(streamParams, top ? top.dataset.id : '', f => {
    if (seen.has(f.id)) return;
    seen.add(f.id);
    const empty = tbody.querySelector('tr.empty');
    if (empty) empty.remove();
    tbody.prepend(findingRow(f, true));
    // A page left open all day must not keep every finding: drop the oldest
    // row and page back from the one now last ("Load more" brings it back).
    if (tbody.children.length > LIVE_ROWS) {
      const old = tbody.lastElementChild;
      old.remove();
      seen.delete(Number(old.dataset.id));
      cursor = tbody.lastElementChild.dataset.id;
      more.hidden = false;
    }
  }, st => { live.textContent = st === 'live' ? '● live' : '○ reconnecting…'; live.className = st === 'live' ? 'live' : 'down'; });
};

// ---- one finding ----

function featureChart(features) {
  const rows = features.slice(0, 10);
  if (!rows.length) return h('p', { class: 'muted', text: 'The detector reported no feature contributions.' });
  const W = 560, rowH = 24, labelW = 200, pad = 8;
  const maxAbs = Math.max(...rows.map(f => Math.abs(f.contribution)), 1e-9);
  const svg = s('svg', { id: 'feature-chart', width: '100%', height: rows.length * rowH + pad * 2, viewBox: `0 0 ${W} ${rows.length * rowH + pad * 2}`, role: 'img', 'aria-label': 'Top features' });
  rows.forEach((f, i) => {
    const y = pad + i * rowH;
    const w = Math.max(1, (W - labelW - 70) * Math.abs(f.contribution) / maxAbs);
    svg.append(
      s('text', { x: labelW - 6, y: y + 15, 'text-anchor': 'end', text: f.name.length > 30 ? f.name.slice(0, 29) + '…' : f.name }),
      s('rect', { class: 'bar' + (f.contribution < 0 ? ' neg' : ''), x: labelW, y: y + 3, width: w.toFixed(1), height: rowH - 8 },
        s('title', { text: f.name + ': ' + f.contribution })),
      s('text', { x: labelW + w + 4, y: y + 15, text: Number(f.contribution).toPrecision(3) }));
  });
  return svg;
}

function kv(pairs) {
  return h('dl', { class: 'kv' }, pairs.filter(p => p[1] !== undefined && p[1] !== '' && p[1] !== null)
    .map(([k, v]) => [h('dt', { text: k }), h('dd', {}, v instanceof Node ? v : String(v))]));
}

pages.finding = async (main, parts) => {
  const id = parseInt(parts[0], 10);
  if (!(id > 0)) throw new Error('no such finding');
  const f = await api('/findings/' + id);
  const c = f.context || {};
  const comment = h('textarea', { id: 'triage-comment', rows: 2, cols: 50, maxlength: 4096, placeholder: 'Comment (optional)' });
  const assignee = h('input', { id: 'triage-assignee', value: f.assignee || '', maxlength: 64, placeholder: 'assignee' });
  const triage = async (status) => {
    const body = {};
    if (status) body.status = status;
    if (assignee.value !== (f.assignee || '')) body.assignee = assignee.value;
    if (comment.value.trim()) body.comment = comment.value.trim();
    if (!Object.keys(body).length) { toast('Nothing to change'); return; }
    try {
      await api('/findings/' + id + '/triage', { method: 'POST', body });
      toast(status === 'false_positive' ? 'Marked false positive; the entity\'s agents will suppress it' : 'Saved');
      route();
    } catch (e) { toast('Triage failed: ' + e.message); }
  };
  const btn = (bid, label, st) => h('button', { id: bid, type: 'button', text: label, disabled: st && f.status === st, onclick: () => triage(st) });
  const notes = h('ul', { id: 'notes' }, (f.notes || []).map(n => h('li', {},
    fmtTime(n.time) + ' · ' + n.actor + (n.status ? ' → ' + n.status : '') + (n.assignee ? ' (assignee ' + n.assignee + ')' : '') + (n.comment ? ': ' + n.comment : ''))));
  const pv = f.provenance || {};
  main.replaceChildren(
    h('h1', {}, 'Finding ' + f.id + ' ', sevBadge(f.severity), ' ', h('span', { id: 'status' }, statusBadge(f.status))),
    h('p', { id: 'finding-summary', text: f.summary }),
    h('div', { class: 'grid' },
      h('div', { class: 'card' }, h('h2', { text: 'Explanation' }),
        h('p', { id: 'explanation', text: (f.explanation || {}).text || '' }),
        featureChart((f.explanation || {}).top_features || f.top_features || [])),
      h('div', { class: 'card' }, h('h2', { text: 'Context' }), kv([
        ['Entity', f.entity], ['Agent', h('a', { href: '#/agents?focus=' + encodeURIComponent(f.agent_id), text: f.agent_id })],
        ['Detector', f.detector], ['Time', fmtTime(f.time)], ['First seen', fmtTime(f.first_seen)],
        ['Active since', f.lead_in ? h('span', { id: 'lead-in', text: fmtTime(f.lead_in.since) }) : undefined],
        ['Packets before', f.lead_in ? h('span', { id: 'lead-in-packets', text: String(f.lead_in.packets) }) : undefined],
        ['Last seen', fmtTime(f.last_seen)],
        ['Events merged', f.count], ['Score / threshold', Number(f.score).toPrecision(4) + ' / ' + Number(f.threshold).toPrecision(4)],
        ['Source', c.src_ip ? c.src_ip + (c.src_port ? ':' + c.src_port : '') : undefined], ['Source MAC', c.src_mac],
        ['Destination', c.dst_ip ? c.dst_ip + (c.dst_port ? ':' + c.dst_port : '') : undefined],
        ['Protocol', c.proto], ['Path', c.path], ['Packets', f.packets], ['Bytes', f.bytes]])),
      h('div', { class: 'card' }, h('h2', { text: 'Provenance' }), kv([
        ['Model', (pv.model || {}).name], ['Version', (pv.model || {}).version], ['Digest', (pv.model || {}).digest],
        ['In registry', pv.in_registry ? 'yes' : 'no'], ['Signers', pv.signers ? JSON.stringify(pv.signers) : undefined],
        ['Published by', pv.published_by], ['Agent sequence', pv.seq], ['Received', fmtTime(pv.received_at)]])),
      h('div', { class: 'card' }, h('h2', { text: 'Triage' }),
        h('div', { class: 'triage' }, btn('triage-ack', 'Acknowledge', 'acknowledged'), btn('triage-fp', 'False positive', 'false_positive'),
          btn('triage-resolve', 'Resolve', 'resolved'), btn('triage-reopen', 'Reopen', 'new')),
        h('p', {}, assignee, ' ', h('button', { class: 'secondary', type: 'button', id: 'triage-save', text: 'Save note', onclick: () => triage(null) })),
        h('p', {}, comment), h('h2', { text: 'History' }), notes)),
    h('p', {}, h('a', { href: '#/findings', text: '← all findings' })));
};

// ---- agents ----

pages.agents = async (main, _parts, qs) => {
  const r = await api('/agents');
  const agents = r.agents.slice().sort((a, b) => (b.health.rank - a.health.rank) || a.entity.localeCompare(b.entity) || a.id.localeCompare(b.id));
  const counts = {};
  for (const a of agents) counts[a.health.status] = (counts[a.health.status] || 0) + 1;
  const focus = qs.get('focus');
  const rows = agents.map(a => {
    const sp = a.health.spool || {};
    const models = (a.health.active_models || []).map(m => m.name + '@' + m.version).join(', ');
    // Per-sensor calibration: the model's threshold and the active one.
    const cal = (a.health.calibration || []).map(c => c.feature_set + ': ' + (!c.calibrated ? 'calibrating'
      : c.threshold > c.model_threshold ? 'threshold ' + c.model_threshold.toPrecision(4) + ' → ' + c.threshold.toPrecision(4) + ' (local)'
        : 'threshold ' + c.model_threshold.toPrecision(4) + ' kept')).join('; ');
    return h('tr', { 'data-agent': a.id, class: a.id === focus ? 'fresh' : '' },
      h('td', {}, healthBadge(a.health.status)),
      h('td', {}, (a.health.problems || []).length ? h('ul', { class: 'problems' }, a.health.problems.map(p => h('li', { text: p }))) : h('span', { class: 'muted', text: '—' })),
      h('td', { text: a.entity }), h('td', { text: a.id }), h('td', { text: a.hostname }), h('td', { text: a.version || '' }),
      h('td', { text: a.last_seen ? fmtTime(a.last_seen) + (a.health.seen_ago ? ' (' + a.health.seen_ago + ' ago)' : '') : 'never' }),
      h('td', { text: sp.depth !== undefined ? sp.depth + ' waiting, ' + (sp.dropped || 0) + ' dropped' : '' }),
      h('td', {}, h('div', { text: models }), cal ? h('div', { class: 'muted calibration', text: cal }) : ''), h('td', { text: fmtTime(a.cert_not_after) }));
  });
  main.replaceChildren(h('h1', { text: 'Agents' }),
    h('div', { class: 'summary', id: 'health-summary' }, ['ok', 'warning', 'critical', 'offline', 'unknown', 'revoked'].map(k =>
      h('div', { class: 'card' }, h('div', { class: 'n', text: String(counts[k] || 0) }), healthBadge(k)))),
    h('table', { id: 'agents' }, h('thead', {}, h('tr', {}, ['Health', 'Problems', 'Entity', 'Agent', 'Host', 'Version', 'Last seen', 'Spool', 'Active models', 'Certificate until'].map(t => h('th', { text: t })))),
      h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: 10, class: 'muted', text: 'No agents enrolled yet.' })))));
};

// ---- models and rollouts ----

function progressBar(progress) {
  const order = ['active', 'shadow', 'verified', 'fetched', 'offered', 'rejected', 'rolled_back'];
  const colors = { active: '#2e7d32', shadow: '#66bb6a', verified: '#1565c0', fetched: '#42a5f5', offered: '#90caf9', rejected: '#c62828', rolled_back: '#ef6c00' };
  const total = Object.values(progress || {}).reduce((a, b) => a + b, 0);
  const W = 260, H = 14;
  const svg = s('svg', { width: W, height: H, class: 'progress', role: 'img', 'aria-label': 'rollout progress' });
  svg.append(s('rect', { x: 0, y: 0, width: W, height: H, fill: '#eceff1' }));
  let x = 0;
  const keys = order.concat(Object.keys(progress || {}).filter(k => !order.includes(k)));
  for (const k of keys) {
    const n = (progress || {})[k] || 0;
    if (!n || !total) continue;
    const w = W * n / total;
    svg.append(s('rect', { x: x.toFixed(1), y: 0, width: w.toFixed(1), height: H, fill: colors[k] || '#9e9e9e' }, s('title', { text: k + ': ' + n })));
    x += w;
  }
  const legend = keys.filter(k => (progress || {})[k]).map(k => k + ' ' + progress[k]).join(' · ');
  return h('span', {}, svg, ' ', h('span', { class: 'muted', text: total ? legend : 'no agent reported yet' }));
}

pages.models = async (main) => {
  const [m, r] = await Promise.all([api('/models'), api('/rollouts')]);
  main.replaceChildren(h('h1', { text: 'Models and rollouts' }),
    h('h2', { text: 'Rollouts' }),
    h('table', { id: 'rollouts' }, h('thead', {}, h('tr', {}, ['Rollout', 'Model', 'Target', 'State', 'Progress', 'Created'].map(t => h('th', { text: t })))),
      h('tbody', {}, r.rollouts.length ? r.rollouts.map(x => h('tr', {},
        h('td', { text: x.id }), h('td', { text: x.model.name + '@' + x.model.version + (x.shadow ? ' (shadow)' : '') }),
        h('td', { text: x.entity ? 'entity ' + x.entity : (x.percent ? x.percent + '% of agents' : (x.target ? JSON.stringify(x.target) : 'all')) }),
        h('td', { text: x.state }), h('td', {}, progressBar(x.progress)), h('td', { text: fmtTime(x.created_at) + (x.created_by ? ' by ' + x.created_by : '') })))
        : h('tr', {}, h('td', { colspan: 6, class: 'muted', text: 'No rollouts.' })))),
    h('h2', { text: 'Registry' }),
    h('table', { id: 'models' }, h('thead', {}, h('tr', {}, ['Name', 'Version', 'Detector', 'Digest', 'Signers', 'Published'].map(t => h('th', { text: t })))),
      h('tbody', {}, m.models.length ? m.models.map(x => h('tr', {},
        h('td', { text: x.name }), h('td', { text: x.version }), h('td', { text: x.detector || '' }), h('td', { text: x.digest }),
        h('td', { text: JSON.stringify(x.signers) }), h('td', { text: fmtTime(x.created_at) + (x.published_by ? ' by ' + x.published_by : '') })))
        : h('tr', {}, h('td', { colspan: 6, class: 'muted', text: 'No models published.' })))));
};

// ---- charts ----

function lineChart(id, title, buckets, keyOf, since, until, bucketSec) {
  const series = new Map();
  const n = Math.max(1, Math.ceil((Date.parse(until) - Date.parse(since)) / 1000 / bucketSec));
  for (const b of buckets) {
    const k = keyOf(b);
    if (!series.has(k)) series.set(k, new Array(n).fill(0));
    const i = Math.floor((Date.parse(b.start) - Date.parse(since)) / 1000 / bucketSec);
    if (i >= 0 && i < n) series.get(k)[i] += b.count;
  }
  const W = 640, H = 220, L = 44, B = 24, T = 8, R = 8;
  const maxY = Math.max(1, ...[...series.values()].flat());
  const x = i => L + (W - L - R) * (n === 1 ? 0.5 : i / (n - 1));
  const y = v => T + (H - T - B) * (1 - v / maxY);
  const svg = s('svg', { id, width: '100%', height: H, viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title });
  svg.append(s('line', { class: 'axis', x1: L, y1: H - B, x2: W - R, y2: H - B }), s('line', { class: 'axis', x1: L, y1: T, x2: L, y2: H - B }),
    s('text', { x: L - 4, y: T + 10, 'text-anchor': 'end', text: String(maxY) }), s('text', { x: L - 4, y: H - B, 'text-anchor': 'end', text: '0' }),
    s('text', { x: L, y: H - 6, text: fmtTime(since) }), s('text', { x: W - R, y: H - 6, 'text-anchor': 'end', text: fmtTime(until) }));
  const legend = h('div', { class: 'legend' });
  let ci = 0;
  for (const [k, vals] of series) {
    const color = PALETTE[ci++ % PALETTE.length];
    svg.append(s('polyline', { fill: 'none', stroke: color, 'stroke-width': 2, points: vals.map((v, i) => x(i).toFixed(1) + ',' + y(v).toFixed(1)).join(' ') },
      s('title', { text: k + ': ' + vals.reduce((a, b) => a + b, 0) + ' findings' })));
    const sw = s('svg', { width: 12, height: 12 }, s('rect', { width: 12, height: 12, fill: color }));
    legend.append(h('span', {}, sw, ' ' + k + ' (' + vals.reduce((a, b) => a + b, 0) + ')'));
  }
  return h('div', { class: 'card' }, h('h2', { text: title }), series.size ? svg : h('p', { class: 'muted', text: 'No findings in this window.' }), legend);
}

pages.charts = async (main, _parts, qs) => {
  const win = qs.get('window') || '24h';
  const r = await api('/findings/stats?since=' + encodeURIComponent(win));
  const pick = h('p', {}, 'Window: ', ['1h', '24h', '168h', '720h'].map(w => [h('a', { href: '#/charts?window=' + w, text: w === win ? '[' + w + ']' : w }), ' ']));
  main.replaceChildren(h('h1', { text: 'Findings over time' }), pick,
    h('div', { class: 'grid' },
      lineChart('chart-entity', 'Per entity', r.buckets, b => b.entity, r.since, r.until, r.bucket_seconds),
      lineChart('chart-detector', 'Per detector', r.buckets, b => b.detector, r.since, r.until, r.bucket_seconds)));
};

// ---- suppressions ----

pages.suppressions = async (main) => {
  const row = x => h('tr', {},
    h('td', { text: x.id }), h('td', { text: x.entity }), h('td', { text: x.detector }),
    h('td', { text: [x.src_ip && 'src ' + x.src_ip, x.dst_ip && 'dst ' + x.dst_ip, x.dst_port && 'port ' + x.dst_port, x.proto, x.path].filter(Boolean).join(', ') || 'any' }),
    h('td', {}, x.finding_id ? h('a', { href: '#/finding/' + x.finding_id, text: String(x.finding_id) }) : ''),
    h('td', { text: fmtTime(x.created_at) + (x.created_by ? ' by ' + x.created_by : '') }),
    h('td', {}, h('button', { class: 'secondary', type: 'button', text: 'Lift', onclick: async () => {
      try { await api('/suppressions/' + x.id + '/lift', { method: 'POST' }); toast('Lifted'); route(); } catch (e) { toast(e.message); }
    } })));
  const tbody = h('tbody', {});
  const more = h('button', { id: 'suppressions-more', class: 'secondary', type: 'button', text: 'Load more', hidden: true });
  let cursor = '';
  async function load() {
    const r = await api('/suppressions?limit=200' + (cursor ? '&cursor=' + encodeURIComponent(cursor) : ''));
    tbody.append(...r.suppressions.map(row));
    cursor = r.next_cursor || '';
    more.hidden = !cursor;
    if (!tbody.children.length) tbody.append(h('tr', {}, h('td', { colspan: 7, class: 'muted', text: 'None.' })));
  }
  more.addEventListener('click', () => load().catch(e => toast(e.message)));
  await load();
  main.replaceChildren(h('h1', { text: 'Active suppressions' }),
    h('p', { class: 'muted', text: 'Learnt from findings marked false positive; the agents of the entity stop raising matching findings.' }),
    h('table', { id: 'suppressions' }, h('thead', {}, h('tr', {}, ['ID', 'Entity', 'Detector', 'Match', 'From finding', 'Created', ''].map(t => h('th', { text: t })))), tbody),
    h('p', {}, more));
};

// ---- audit ----

pages.audit = async (main) => {
  // 200 entries at a time, newest first, with "Load more" (the API's cursor):
  // the log grows with every write, and older entries must stay reachable.
  const tbody = h('tbody', {});
  const more = h('button', { id: 'audit-more', class: 'secondary', type: 'button', text: 'Load more', hidden: true });
  let cursor = '';
  async function load() {
    const r = await api('/audit?limit=200' + (cursor ? '&cursor=' + encodeURIComponent(cursor) : ''));
    tbody.append(...r.entries.map(e => h('tr', {}, [e.id, fmtTime(e.time), e.actor, e.action, e.target, e.entity, e.remote, e.detail].map(v => h('td', { text: v === undefined ? '' : String(v) })))));
    cursor = r.next_cursor || '';
    more.hidden = !cursor;
  }
  more.addEventListener('click', () => load().catch(e => toast(e.message)));
  await load();
  const result = h('span', { id: 'verify-result' });
  const verify = isCERT() ? h('button', { id: 'verify', type: 'button', text: 'Verify hash chain', onclick: async () => {
    try {
      const v = await api('/audit/verify');
      result.textContent = v.ok ? ' ✔ chain intact (' + v.checked + ' entries)' : ' ✘ ' + v.error;
      result.className = v.ok ? '' : 'error';
    } catch (e) { result.textContent = ' ' + e.message; }
  } }) : null;
  main.replaceChildren(h('h1', { text: 'Audit log' }), h('p', {}, verify, result),
    h('table', { id: 'audit' }, h('thead', {}, h('tr', {}, ['ID', 'Time', 'Actor', 'Action', 'Target', 'Entity', 'From', 'Detail'].map(t => h('th', { text: t })))), tbody),
    h('p', {}, more));
};

// ---- start ----

document.getElementById('signout').addEventListener('click', () => signOut('Signed out'));
window.addEventListener('hashchange', route);
route();
