// spicetap's page: live and recorded sessions, and one session's displays
// (video, screenshot), channels and files. Plain JS, no dependencies; it
// talks only to the spicetap that served it (/api/..., /metrics).
'use strict';

const view = document.getElementById('view');
const statusLine = document.getElementById('status');
const login = document.getElementById('login');
let token = sessionStorage.getItem('spicetap-token');
let timer = null;
const blobs = [];

function headers() {
  return token ? { Authorization: 'Bearer ' + token } : {};
}

async function api(path) {
  const r = await fetch(path, { headers: headers() });
  if (r.status === 401) {
    login.hidden = false;
    throw new Error('the server needs its access token');
  }
  if (!r.ok) throw new Error(path + ': HTTP ' + r.status);
  return r.json();
}

// Media need the token too: without one, a plain URL (the browser streams
// and seeks with range requests); with one, the file is fetched first.
async function mediaUrl(path) {
  if (!token) return path;
  const r = await fetch(path, { headers: headers() });
  if (!r.ok) throw new Error(path + ': HTTP ' + r.status);
  const url = URL.createObjectURL(await r.blob());
  blobs.push(url);
  return url;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('data-')) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c ?? '')));
  return e;
}

function bytes(n) {
  if (n == null) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + ' ' + units[i];
}

function when(s) {
  return s ? new Date(s).toLocaleString() : '';
}

function total(channels, key) {
  return (channels || []).reduce((a, c) => a + (c[key] || 0), 0);
}

function sessionPath(id) {
  return '/api/sessions/' + encodeURIComponent(id);
}

function screenshotPath(id, display) {
  return sessionPath(id) + '/displays/' + display + '/screenshot.png';
}

async function showList() {
  const list = await api('/api/sessions?per_page=100');
  const rows = list.sessions.map((s) => {
    const link = s.id ? el('a', { href: '#/session/' + encodeURIComponent(s.id) }, s.id) : '(not recorded)';
    const thumb = el('td');
    if (s.live && s.id) {
      const img = el('img', { class: 'thumb', alt: 'display 0 of session ' + s.session_id + ' now', 'data-thumb': s.id });
      thumb.append(img);
    }
    return el('tr', { 'data-live': String(!!s.live), 'data-id': s.id || '' },
      el('td', {}, el('span', { class: 'badge' + (s.live ? ' live' : '') }, s.live ? 'live' : 'recorded')),
      el('td', {}, link),
      el('td', {}, s.session_id),
      el('td', {}, when(s.start)),
      el('td', {}, s.client_address || ''),
      el('td', { class: 'num' }, s.live ? s.open_channels : (s.channels || []).length),
      el('td', { class: 'num' }, bytes(total(s.channels, 'bytes_c2s') + total(s.channels, 'bytes_s2c'))),
      thumb);
  });
  const table = el('div', { class: 'table' }, el('table', {},
    el('caption', { class: 'empty' }, list.total + ' sessions'),
    el('thead', {}, el('tr', {},
      el('th', {}, 'state'), el('th', {}, 'recording'), el('th', {}, 'session id'), el('th', {}, 'started'),
      el('th', {}, 'client'), el('th', { class: 'num' }, 'channels'), el('th', { class: 'num' }, 'bytes'),
      el('th', {}, 'display 0'))),
    el('tbody', {}, ...rows)));
  // Re-rendered every 2 s: keep the keyboard focus where it was.
  const focused = document.activeElement && view.contains(document.activeElement) ? document.activeElement.getAttribute('href') : null;
  view.replaceChildren(el('h2', {}, 'Sessions'), rows.length ? table : el('p', { class: 'empty' }, 'No sessions yet.'));
  if (focused) view.querySelector('a[href="' + CSS.escape(focused) + '"]')?.focus();
  for (const img of view.querySelectorAll('img[data-thumb]')) {
    img.src = await mediaUrl(screenshotPath(img.dataset.thumb, 0) + '?t=' + Date.now());
  }
}

async function showSession(id) {
  const s = await api(sessionPath(id));
  const displays = (s.files || []).filter((f) => /^display-\d+\.pcap$/.test(f)).map((f) => f.match(/\d+/)[0]);
  const parts = [el('h2', {}, 'Session ' + (s.session_id ?? ''), ' ',
    el('span', { class: 'badge' + (s.live ? ' live' : '') }, s.live ? 'live' : 'recorded'))];
  parts.push(el('p', {}, 'Started ' + when(s.start) + (s.end ? ', ended ' + when(s.end) : '') +
    (s.client_address ? ', client ' + s.client_address : '')));
  const shown = el('div', { class: 'displays' });
  for (const n of displays) {
    const box = el('div', { class: 'display', 'data-display': n }, el('h3', {}, 'Display ' + n));
    if (!s.live && s.files.includes('display-' + n + '.mp4')) {
      const video = el('video', { controls: true, preload: 'metadata', muted: true, playsInline: true });
      video.setAttribute('aria-label', 'recording of display ' + n);
      box.append(video);
      video.src = await mediaUrl(sessionPath(id) + '/files/display-' + n + '.mp4');
    }
    const img = el('img', { alt: (s.live ? 'display ' + n + ' now' : 'display ' + n + ' at the end') });
    img.dataset.shot = n;
    box.append(img);
    img.src = await mediaUrl(screenshotPath(id, n) + '?t=' + Date.now());
    shown.append(box);
  }
  parts.push(shown);
  const channels = (s.channels || []).map((c) => el('tr', {},
    el('td', {}, c.type + '-' + c.channel_id),
    el('td', { class: 'num' }, bytes(c.bytes_c2s)), el('td', { class: 'num' }, c.messages_c2s),
    el('td', { class: 'num' }, bytes(c.bytes_s2c)), el('td', { class: 'num' }, c.messages_s2c),
    el('td', {}, c.closed ? 'closed' : 'open')));
  parts.push(el('h2', {}, 'Channels'), el('div', { class: 'table' }, el('table', {},
    el('thead', {}, el('tr', {}, el('th', {}, 'channel'), el('th', { class: 'num' }, 'bytes to server'),
      el('th', { class: 'num' }, 'messages'), el('th', { class: 'num' }, 'bytes to client'),
      el('th', { class: 'num' }, 'messages'), el('th', {}, 'state'))),
    el('tbody', {}, ...channels))));
  parts.push(el('h2', {}, 'Files'), el('ul', { class: 'files' }, ...(s.files || []).map((f) =>
    el('li', {}, el('a', { href: sessionPath(id) + '/files/' + encodeURIComponent(f), download: f }, f)))));
  view.replaceChildren(...parts);
}

async function route() {
  clearTimeout(timer);
  while (blobs.length) URL.revokeObjectURL(blobs.pop());
  const m = location.hash.match(/^#\/session\/(.+)$/);
  try {
    if (m) {
      await showSession(decodeURIComponent(m[1]));
    } else {
      await showList();
      timer = setTimeout(route, 2000);
    }
    statusLine.textContent = 'updated ' + new Date().toLocaleTimeString();
  } catch (e) {
    statusLine.textContent = e.message;
    if (!m) timer = setTimeout(route, 5000);
  }
}

login.addEventListener('submit', (e) => {
  e.preventDefault();
  token = document.getElementById('token').value;
  sessionStorage.setItem('spicetap-token', token);
  login.hidden = true;
  route();
});
window.addEventListener('hashchange', () => { route(); document.getElementById('main').focus(); });
route();
