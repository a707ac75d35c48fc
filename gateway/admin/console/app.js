/*
 * app.js - the admin console: one page on the gateway's admin listener, talking to
 * the admin API (/admin/keys, /admin/usage, /admin/jobs) with the admin key kept in
 * sessionStorage (this tab, this session; never in a URL). Every name that comes
 * from the server (key names, model names, job ids) is put in the page as text
 * (textContent), never as HTML. Charts: uPlot (uPlot.iife.min.js, embedded too).
 */
'use strict';

const KEY = 'gw-admin-key';
const $ = (id) => document.getElementById(id);
const DAYS = 30;
let keysCache = [];

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells) {
  const tr = document.createElement('tr');
  for (const c of cells) {
    const td = document.createElement('td');
    if (c instanceof Node) td.appendChild(c); else td.textContent = c === null || c === undefined ? '' : String(c);
    tr.appendChild(td);
  }
  return tr;
}

function fmtTime(t) {
  if (!t) return '—';
  return new Date(t * 1000).toISOString().replace('T', ' ').slice(0, 16) + ' UTC';
}

function fmtDay(t) {
  return t ? new Date(t * 1000).toISOString().slice(0, 10) : 'never';
}

function showError(where, msg) {
  $(where).textContent = msg || '';
}

async function api(method, path, body) {
  const key = sessionStorage.getItem(KEY);
  const opts = { method, headers: { Authorization: 'Bearer ' + key }, cache: 'no-store' };
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (!r.ok) {
    const msg = data && data.error ? data.error.message : ('HTTP ' + r.status);
    const err = new Error(msg);
    err.status = r.status;
    throw err;
  }
  return data;
}

/* ------------------------------------------------------------ sign in */

function signedIn(yes) {
  $('signin').hidden = yes;
  $('app').hidden = !yes;
  $('signout').hidden = !yes;
}

async function signIn(ev) {
  ev.preventDefault();
  const key = $('signin-key').value.trim();
  $('signin-key').value = '';
  sessionStorage.setItem(KEY, key);
  showError('signin-error', '');
  try {
    await refresh();
    signedIn(true);
  } catch (e) {
    sessionStorage.removeItem(KEY);
    signedIn(false);
    showError('signin-error', e.status === 403 ? 'This key is not an admin key.'
      : e.status === 401 ? 'Unknown key.' : e.message);
  }
}

function signOut() {
  sessionStorage.removeItem(KEY);
  keysCache = [];
  signedIn(false);
}

/* ------------------------------------------------------------ keys */

function usageBar(k) {
  const wrap = el('div', null, 'bar');
  const fill = el('div', null, 'bar-fill');
  const used = k.today.seconds - k.today.refunded_seconds;
  const budget = k.daily_seconds;
  const pct = budget > 0 ? Math.min(100, (100 * used) / budget) : 0;  /* no budget: no bar */
  fill.style.width = pct + '%';            /* CSSOM: allowed by style-src 'self' */
  if (budget > 0 && used >= budget) fill.classList.add('over');
  wrap.appendChild(fill);
  wrap.appendChild(el('span', used + ' / ' + (budget > 0 ? budget : '∞'), 'bar-text'));
  return wrap;
}

function keyCell(k) {
  const span = el('span', k.name);
  const frag = document.createDocumentFragment();
  frag.appendChild(span);
  if (k.source === 'config') frag.appendChild(el('span', k.admin ? 'config · admin' : 'config', 'tag'));
  if (k.state !== 'active') frag.appendChild(el('span', k.state, 'tag'));
  return frag;
}

function actions(k) {
  const frag = document.createDocumentFragment();
  if (k.read_only || k.state === 'revoked') return frag;
  const edit = el('button', 'Edit');
  edit.type = 'button';
  edit.addEventListener('click', () => openEdit(k));
  const revoke = el('button', 'Revoke', 'danger');
  revoke.type = 'button';
  revoke.dataset.key = k.name;
  revoke.addEventListener('click', () => revokeKey(k.name));
  frag.appendChild(edit);
  frag.appendChild(revoke);
  return frag;
}

function renderKeys() {
  const tbody = $('keys-table').tBodies[0];
  tbody.replaceChildren();
  const showRevoked = $('show-revoked').checked;
  for (const k of keysCache) {
    if (k.state === 'revoked' && !showRevoked) continue;
    const tr = row([keyCell(k), usageBar(k), k.today.jobs, k.today.failed,
      k.today.refunded_seconds, fmtTime(k.last_used_at), k.rpm || '∞', k.burst || '—',
      k.concurrency || '∞', k.models ? k.models.join(', ') : 'all', fmtDay(k.expires_at),
      actions(k)]);
    tr.dataset.key = k.name;
    if (k.state === 'revoked') tr.classList.add('revoked');
    tbody.appendChild(tr);
  }
}

function limitValue(v) {
  v = v.trim();
  if (v === '') return undefined;
  if (v === 'default') return null;
  if (!/^[0-9]+$/.test(v)) throw new Error('Limits are whole numbers, or "default".');
  return Number(v);
}

function formBody(form, withName) {
  const f = new FormData(form);
  const body = {};
  if (withName) body.name = String(f.get('name')).trim();
  for (const n of ['rpm', 'burst', 'concurrency', 'daily_seconds']) {
    const v = limitValue(String(f.get(n)));
    if (v !== undefined) body[n] = v;
  }
  const models = String(f.get('models')).trim();
  if (models === '*') body.models = null;
  else if (models !== '') body.models = models.split(',').map((s) => s.trim()).filter(Boolean);
  const exp = String(f.get('expires')).trim();
  if (exp === 'never') body.expires = null;
  else if (exp !== '') body.expires = exp;
  return body;
}

async function createKey(ev) {
  ev.preventDefault();
  showError('app-error', '');
  try {
    const k = await api('POST', '/admin/keys', formBody(ev.target, true));
    $('secret-name').textContent = k.name;
    $('secret').textContent = k.secret;
    $('copied').textContent = '';
    $('secret-box').hidden = false;
    ev.target.reset();
    await refresh();
  } catch (e) {
    showError('app-error', 'Create: ' + e.message);
  }
}

async function copySecret() {
  const text = $('secret').textContent;
  try {
    await navigator.clipboard.writeText(text);
    $('copied').textContent = 'copied';
  } catch (e) {          /* no clipboard permission: select it for Ctrl+C */
    const r = document.createRange();
    r.selectNodeContents($('secret'));
    const s = window.getSelection();
    s.removeAllRanges();
    s.addRange(r);
    $('copied').textContent = 'selected: press Ctrl+C';
  }
}

let editing = null;

function openEdit(k) {
  editing = k.name;
  $('edit-name').textContent = k.name;
  const form = $('edit-form');
  form.reset();
  $('edit').hidden = false;
  form.elements.daily_seconds.focus();
}

async function saveEdit(ev) {
  ev.preventDefault();
  showError('app-error', '');
  try {
    await api('PATCH', '/admin/keys/' + encodeURIComponent(editing), formBody(ev.target, false));
    $('edit').hidden = true;
    await refresh();
  } catch (e) {
    showError('app-error', 'Edit: ' + e.message);
  }
}

async function revokeKey(name) {
  if (!window.confirm('Revoke the key "' + name + '"? Its next request is refused; this cannot be undone.')) return;
  showError('app-error', '');
  try {
    await api('DELETE', '/admin/keys/' + encodeURIComponent(name));
    await refresh();
  } catch (e) {
    showError('app-error', 'Revoke: ' + e.message);
  }
}

/* ------------------------------------------------------------ usage */

let chart = null;

function dayStart(t) {
  return Math.floor(t / 86400) * 86400;
}

function renderChart(rows) {
  const today = dayStart(Date.now() / 1000);
  const xs = [];
  for (let i = DAYS - 1; i >= 0; i--) xs.push(today - i * 86400);
  const index = new Map(xs.map((x, i) => [new Date(x * 1000).toISOString().slice(0, 10), i]));
  const perKey = new Map();
  for (const r of rows) {
    const i = index.get(r.day);
    if (i === undefined) continue;
    if (!perKey.has(r.key)) perKey.set(r.key, new Array(DAYS).fill(0));
    perKey.get(r.key)[i] += r.seconds - r.refunded_seconds;
  }
  const names = [...perKey.keys()].sort();
  /* stacked: series j draws the sum of keys 0..j; drawn from the tallest down so that
   * each key's band shows; the legend shows each key's own value */
  const cum = [];
  let acc = new Array(DAYS).fill(0);
  for (const n of names) {
    acc = acc.map((v, i) => v + perKey.get(n)[i]);
    cum.push(acc);
  }
  const palette = ['#2e6bd8', '#e07b39', '#3a9e5f', '#9b59b6', '#c0392b', '#16a085', '#d4ac0d', '#7f8c8d'];
  const series = [{}];
  const data = [xs];
  for (let j = names.length - 1; j >= 0; j--) {
    const n = names[j];
    const color = palette[j % palette.length];
    series.push({
      label: n,   /* uPlot puts labels in the legend with textContent */
      stroke: color,
      fill: color + 'cc',
      paths: uPlot.paths.bars({ size: [0.7, 60] }),
      value: (u, v, si, idx) => (idx === null || idx === undefined ? '' : String(perKey.get(n)[idx])),
    });
    data.push(cum[j]);
  }
  const box = $('chart');
  if (chart) { chart.destroy(); chart = null; }
  box.replaceChildren();
  if (names.length === 0) {
    box.appendChild(el('p', 'No usage in the last ' + DAYS + ' days.'));
    return;
  }
  const width = Math.max(320, box.clientWidth || 900);
  chart = new uPlot({
    width, height: 300,
    scales: { x: { time: true } },
    axes: [{}, { label: 'video-seconds' }],
    series,
    legend: { live: true },
  }, data, box);
}

function renderModels(rows) {
  const per = new Map();
  for (const r of rows) {
    const m = per.get(r.model) || { seconds: 0, jobs: 0, failed: 0 };
    m.seconds += r.seconds - r.refunded_seconds;
    m.jobs += r.jobs;
    m.failed += r.failed;
    per.set(r.model, m);
  }
  const total = [...per.values()].reduce((a, m) => a + m.seconds, 0) || 1;
  const tbody = $('models-table').tBodies[0];
  tbody.replaceChildren();
  for (const [model, m] of [...per.entries()].sort((a, b) => b[1].seconds - a[1].seconds)) {
    const bar = el('div', null, 'bar');
    const fill = el('div', null, 'bar-fill');
    fill.style.width = (100 * m.seconds / total) + '%';
    bar.appendChild(fill);
    bar.appendChild(el('span', String(m.seconds), 'bar-text'));
    tbody.appendChild(row([model, bar, m.jobs, m.failed]));
  }
}

function renderJobs(jobs) {
  const tbody = $('jobs-table').tBodies[0];
  tbody.replaceChildren();
  for (const j of jobs) {
    tbody.appendChild(row([fmtTime(j.created_at), j.key, j.model, j.seconds, j.status, j.id]));
  }
}

async function refresh() {
  const since = new Date((dayStart(Date.now() / 1000) - (DAYS - 1) * 86400) * 1000).toISOString().slice(0, 10);
  const [keys, usage, jobs] = await Promise.all([
    api('GET', '/admin/keys'),
    api('GET', '/admin/usage?group=key,model,day&since=' + since),
    api('GET', '/admin/jobs?limit=20'),
  ]);
  keysCache = keys.data;
  $('today-label').textContent = '· today ' + new Date().toISOString().slice(0, 10) + ' (UTC)';
  renderKeys();
  renderChart(usage.data);
  renderModels(usage.data);
  renderJobs(jobs.data);
}

document.addEventListener('DOMContentLoaded', () => {
  $('signin-form').addEventListener('submit', signIn);
  $('signout').addEventListener('click', signOut);
  $('create-form').addEventListener('submit', createKey);
  $('edit-form').addEventListener('submit', saveEdit);
  $('edit-cancel').addEventListener('click', () => { $('edit').hidden = true; });
  $('copy').addEventListener('click', copySecret);
  $('show-revoked').addEventListener('change', renderKeys);
  if (sessionStorage.getItem(KEY)) {
    refresh().then(() => signedIn(true)).catch(() => signOut());
  } else {
    signedIn(false);
  }
  setInterval(() => { if (sessionStorage.getItem(KEY)) refresh().catch((e) => showError('app-error', e.message)); }, 30000);
});
