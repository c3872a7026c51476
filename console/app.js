// parkhub console: the shell — session, routing, live stream, critical banner and alarm sound.
import { t, setLang, getLang, normalizeLang, applyStatic, tv } from './i18n.js';
import {
  store, emit, on, api, ApiError, reportError, setUnauthorizedHandler, setToaster, h, $,
  deviceName, fmtShortTime, loadDevices,
} from './core.js';
import { createOverview } from './views/overview.js';
import { createAlarms } from './views/alarms.js';
import { createDevices } from './views/devices.js';
import { createEnergy } from './views/energy.js';
import { createChargers } from './views/chargers.js';

const LANG_KEY = 'parkhub.lang';
const ROUTES = ['overview', 'alarms', 'devices', 'energy', 'chargers'];

const views = {};
let current = null;        // the route shown
let authed = false;

// ---- language ---------------------------------------------------------------------------------

function storedLang() {
  try { return normalizeLang(localStorage.getItem(LANG_KEY)); } catch { return null; }
}

function applyLang(lang) {
  setLang(lang);
  applyStatic();
  document.title = t('app.title');
  renderUser();
  renderLive();
  updateBanner();
  emit('lang');
}

function toggleLang() {
  const next = getLang() === 'en' ? 'zh-CN' : 'en';
  try { localStorage.setItem(LANG_KEY, next); } catch { /* private mode */ }
  applyLang(next);
}

// ---- toasts -----------------------------------------------------------------------------------

function showToast(msg, kind = 'info') {
  const box = $('#toasts');
  const el = h('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status' }, msg);
  box.append(el);
  setTimeout(() => el.remove(), kind === 'error' ? 8000 : 4000);
}

// ---- session ----------------------------------------------------------------------------------

function renderUser() {
  const el = $('#user');
  if (!store.me) { el.textContent = ''; return; }
  el.textContent = `${store.me.user} · ${tv('role', store.me.role)}`;
  $('#hub-name').textContent = (store.me.hub && store.me.hub.name) || '';
}

let retryTimer = null;

function showLogin(note) {
  authed = false;
  document.body.classList.remove('authed', 'nav-open', 'booting');
  closeStream();
  setSiren(false);
  store.alarms.clear();
  updateBanner();
  closeDetail();
  for (const d of document.querySelectorAll('dialog[open]')) d.close();
  if (current && views[current]) views[current].leave();
  current = null;
  for (const v of document.querySelectorAll('.view')) v.hidden = true;
  $('#fatal').hidden = true;
  $('#login').hidden = false;
  const noteEl = $('#login-note');
  noteEl.hidden = !note;
  noteEl.textContent = note || '';
  $('#login-password').value = '';
  const user = $('#login-user');
  (user.value ? $('#login-password') : user).focus();
}

async function onLogin(ev) {
  ev.preventDefault();
  unlockAudio();                      // the click is the user gesture the alarm sound needs
  const err = $('#login-error');
  const submit = $('#login-submit');
  const user = $('#login-user').value.trim();
  const password = $('#login-password').value;
  err.hidden = true;
  if (!user || !password) {
    err.textContent = t('login.failed');
    err.hidden = false;
    return;
  }
  submit.disabled = true;
  submit.textContent = t('login.busy');
  let wait = 0;
  try {
    await api('/login', { method: 'POST', body: { user, password }, quiet401: true });
    const me = await api('/me', { quiet401: true });
    startSession(me);
  } catch (e) {
    if (e instanceof ApiError && e.status === 429) {
      const header = e.headers && Number(e.headers.get('Retry-After'));
      wait = Math.max(1, Math.ceil(Number(e.body && e.body.retry_after_s) || header || 30));
      rateLimited(wait, e.message);
    } else {
      err.textContent = e.message || t('login.failed');
      err.hidden = false;
    }
  } finally {
    submit.textContent = t('login.submit');
    if (!wait) submit.disabled = false;
  }
}

function rateLimited(seconds, serverText) {
  const err = $('#login-error');
  const submit = $('#login-submit');
  let left = seconds;
  clearInterval(retryTimer);
  const show = () => {
    err.textContent = (serverText && !/^HTTP \d+$/.test(serverText) ? serverText + ' — ' : '') + t('login.rateLimited', { s: left });
    err.hidden = false;
  };
  show();
  submit.disabled = true;
  retryTimer = setInterval(() => {
    left -= 1;
    if (left <= 0) {
      clearInterval(retryTimer);
      submit.disabled = false;
      err.hidden = true;
    } else show();
  }, 1000);
}

function startSession(me) {
  store.me = me;
  store.tz = (me.hub && me.hub.timezone) || undefined;
  authed = true;
  $('#login').hidden = true;
  $('#fatal').hidden = true;
  $('#login-error').hidden = true;
  document.body.classList.remove('booting');
  document.body.classList.add('authed');
  document.body.classList.toggle('role-viewer', !(me.role === 'operator' || me.role === 'admin'));
  applyLang(storedLang() || normalizeLang(me.hub && me.hub.language) || 'zh-CN');
  emit('session');
  loadAlarms();
  loadDevices().catch(reportError);   // names for the alarm rows and the banner
  connectStream();
  route();
}

async function logout() {
  try { await api('/logout', { method: 'POST', quiet401: true }); } catch (e) { if (e.status !== 401) reportError(e); }
  store.me = null;
  showLogin();
}

function onUnauthorized() {
  if (!authed) return;
  showLogin(t('login.expired'));
}

// ---- routing ----------------------------------------------------------------------------------

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, query = ''] = raw.split('?');
  const name = ROUTES.includes(path) ? path : null;
  return { name, params: new URLSearchParams(query) };
}

function route() {
  if (!authed) return;
  const { name, params } = parseHash();
  if (!name) {
    history.replaceState(null, '', '#/overview');
    return route();
  }
  document.body.classList.remove('nav-open');
  $('#nav-toggle').setAttribute('aria-expanded', 'false');
  for (const a of document.querySelectorAll('.nav a')) {
    if (a.dataset.route === name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (current && current !== name && views[current]) views[current].leave();
  for (const v of document.querySelectorAll('.view')) v.hidden = v.dataset.view !== name;
  const first = current !== name;
  current = name;
  views[name].enter(params, first);
}

// ---- alarms: list, live updates, banner, sound ------------------------------------------------

let alarmsSeq = 0;

/** Loads the alarm list of the current mode (active, or all on the alarm page). */
export async function loadAlarms() {
  const seq = ++alarmsSeq;
  try {
    const list = await api(`/alarms?state=${store.alarmMode}`);
    if (seq !== alarmsSeq) return;
    const next = new Map();
    for (const a of list || []) next.set(a.id, a);
    store.alarms = next;
    emit('alarms');
    updateBanner();
  } catch (e) {
    reportError(e);
  }
}

function onAlarmEvent(data) {
  const { event, ...alarm } = data;
  if (alarm.id == null) return;
  const prev = store.alarms.get(alarm.id);
  const merged = prev ? { ...prev, ...alarm } : alarm;
  if (store.alarmMode === 'active' && merged.state === 'normal') store.alarms.delete(alarm.id);
  else store.alarms.set(alarm.id, merged);
  emit('alarm', { alarm: merged, event, removed: !store.alarms.has(alarm.id) });
  updateBanner();
}

function criticalUnacked() {
  const out = [];
  for (const a of store.alarms.values()) {
    if (a.severity === 'critical' && (a.state === 'unacked' || a.state === 'rtn_unacked') && !a.suppressed) out.push(a);
  }
  out.sort((a, b) => String(b.raised_at).localeCompare(String(a.raised_at)));
  return out;
}

let muted = false;
const heard = new Set();   // critical alarm ids the operator has already been alerted to

function updateBanner() {
  const banner = $('#critical-banner');
  const list = authed ? criticalUnacked() : [];
  // Nav badge: unacknowledged active alarms.
  let unacked = 0;
  for (const a of store.alarms.values()) if (a.state === 'unacked' || a.state === 'rtn_unacked') unacked += 1;
  const badge = $('#nav-alarm-count');
  badge.hidden = !authed || unacked === 0;
  badge.textContent = String(unacked);

  if (!list.length) {
    banner.hidden = true;
    banner.dataset.sound = 'off';
    document.body.classList.remove('has-banner');
    setSiren(false);
    return;
  }
  let fresh = false;
  for (const a of list) if (!heard.has(a.id)) { heard.add(a.id); fresh = true; }
  if (fresh) muted = false;   // a new critical alarm sounds again even after a mute
  const top = list[0];
  $('#banner-title').textContent = t('banner.critical', { n: list.length });
  $('#banner-detail').textContent =
    `${tv('cat', top.category)} · ${deviceName(top.device_id)} · ${top.message || ''} (${fmtShortTime(top.raised_at)})`;
  banner.hidden = false;
  document.body.classList.add('has-banner');
  const mute = $('#mute');
  mute.textContent = muted ? t('banner.unmute') : t('banner.mute');
  mute.setAttribute('aria-pressed', String(muted));
  setSiren(!muted);
  renderSoundState();
}

function renderSoundState() {
  const banner = $('#critical-banner');
  if (banner.hidden) return;
  const blocked = !muted && (!actx || actx.state !== 'running');
  banner.dataset.sound = muted ? 'muted' : blocked ? 'blocked' : 'on';
  $('#banner-hint').hidden = !blocked;
}

// WebAudio beeps: no sound file to ship. Browsers only start audio after a user gesture; the
// login click or any click/key on the page unlocks it.
let actx = null;
let sirenTimer = null;

function unlockAudio() {
  try {
    if (!actx) {
      const Ctx = window.AudioContext || window.webkitAudioContext;
      if (!Ctx) return;
      actx = new Ctx();
      actx.onstatechange = renderSoundState;
    }
    if (actx.state === 'suspended') actx.resume().then(renderSoundState, () => {});
  } catch (e) {
    console.warn('audio', e);
  }
}

function beep(freq, start, dur) {
  const osc = actx.createOscillator();
  const gain = actx.createGain();
  osc.type = 'square';
  osc.frequency.value = freq;
  gain.gain.setValueAtTime(0.0001, start);
  gain.gain.exponentialRampToValueAtTime(0.15, start + 0.015);
  gain.gain.setValueAtTime(0.15, start + dur - 0.03);
  gain.gain.exponentialRampToValueAtTime(0.0001, start + dur);
  osc.connect(gain).connect(actx.destination);
  osc.start(start);
  osc.stop(start + dur + 0.02);
}

function sirenTick() {
  if (!actx || actx.state !== 'running') return;
  const t0 = actx.currentTime + 0.02;
  beep(988, t0, 0.18);
  beep(740, t0 + 0.24, 0.18);
  beep(988, t0 + 0.48, 0.18);
}

function setSiren(on) {
  if (on && !sirenTimer) {
    sirenTick();
    sirenTimer = setInterval(sirenTick, 1600);
  } else if (!on && sirenTimer) {
    clearInterval(sirenTimer);
    sirenTimer = null;
  }
}

// ---- live stream (SSE) ------------------------------------------------------------------------

let es = null;
let esRetry = null;
let liveState = 'off';   // off | connecting | live | down

function setLive(s) {
  liveState = s;
  renderLive();
}

function renderLive() {
  const el = $('#live');
  el.dataset.state = liveState;
  $('#live-text').textContent =
    liveState === 'live' ? t('header.live') : liveState === 'down' ? t('header.offline') : t('header.connecting');
}

function parse(e) {
  try { return JSON.parse(e.data); } catch { return null; }
}

function connectStream() {
  closeStream();
  setLive('connecting');
  const src = new EventSource('/api/v1/stream');
  es = src;
  let opened = false;
  src.addEventListener('open', () => {
    if (es !== src) return;
    setLive('live');
    // Anything that happened while we were away is fetched again. The very first open follows
    // the initial load closely, but events between that load and the subscription would be lost.
    resync(!opened);
    opened = true;
  });
  src.addEventListener('error', () => {
    if (es !== src) return;
    setLive('down');
    if (src.readyState === EventSource.CLOSED) {
      // The browser gave up (e.g. a 401 or a non-SSE answer): check the session, then retry.
      es = null;
      clearTimeout(esRetry);
      esRetry = setTimeout(async () => {
        if (!authed) return;
        try {
          await api('/me');
          if (authed) connectStream();
        } catch (err) {
          if (err.status !== 401 && authed) esRetry = setTimeout(connectStream, 5000);
        }
      }, 3000);
    }
  });
  src.addEventListener('alarm', (e) => { const d = parse(e); if (d) onAlarmEvent(d); });
  src.addEventListener('reading', (e) => {
    const d = parse(e);
    if (!d || !d.device_id) return;
    let pts = store.latest.get(d.device_id);
    if (!pts) { pts = {}; store.latest.set(d.device_id, pts); }
    pts[d.point] = { value: d.value, unit: d.unit, ts: d.ts };
    const dev = store.devices.get(d.device_id);
    if (dev) dev.last_seen = d.ts;
    emit('reading', d);
  });
  src.addEventListener('device', (e) => {
    const d = parse(e);
    if (!d || !d.device_id) return;
    const dev = store.devices.get(d.device_id);
    if (dev) {
      if ('online' in d) dev.online = d.online;
      if ('last_error' in d) dev.last_error = d.last_error;
      if (d.online && d.ts) dev.last_seen = d.ts;
    }
    emit('device', d);
  });
  src.addEventListener('resync', () => resync(false));
}

function resync(initial) {
  if (!authed) return;
  loadAlarms();   // also on the first open: an alarm raised before the subscription is not lost
  emit('resync', { initial });
}

function closeStream() {
  clearTimeout(esRetry);
  if (es) es.close();
  es = null;
  setLive('off');
}

// ---- alarm detail drawer (opened from the alarm page) -----------------------------------------

function closeDetail() {
  const d = $('#alarm-detail');
  if (!d.hidden) emit('detail-closed');
  d.hidden = true;
}

// ---- start ------------------------------------------------------------------------------------

function showFatal(msg) {
  document.body.classList.remove('booting');
  $('#fatal-text').textContent = t('err.start', { msg });
  $('#fatal').hidden = false;
}

async function boot() {
  setUnauthorizedHandler(onUnauthorized);
  setToaster(showToast);
  applyLang(storedLang() || 'zh-CN');   // before login the hub's language is not known yet

  const ctx = {
    loadAlarms,
    closeDetail,
    alarmChanged(alarm) { emit('alarm', { alarm, event: null }); updateBanner(); },
  };
  views.overview = createOverview($('#view-overview'), ctx);
  views.alarms = createAlarms($('#view-alarms'), ctx);
  views.devices = createDevices($('#view-devices'), ctx);
  views.energy = createEnergy($('#view-energy'), ctx);
  views.chargers = createChargers($('#view-chargers'), ctx);

  $('#login-form').addEventListener('submit', onLogin);
  $('#lang-toggle').addEventListener('click', toggleLang);
  $('#logout').addEventListener('click', logout);
  $('#fatal-retry').addEventListener('click', () => { $('#fatal').hidden = true; start(); });
  $('#nav-toggle').addEventListener('click', () => {
    const open = document.body.classList.toggle('nav-open');
    $('#nav-toggle').setAttribute('aria-expanded', String(open));
  });
  $('#mute').addEventListener('click', () => {
    muted = !muted;
    unlockAudio();
    updateBanner();
  });
  $('#detail-close').addEventListener('click', closeDetail);
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && !document.querySelector('dialog[open]')) closeDetail();
  });
  // Any gesture unlocks the alarm sound (a reloaded page with a live session had no login click).
  for (const type of ['pointerdown', 'keydown']) document.addEventListener(type, unlockAudio, { capture: true });
  window.addEventListener('hashchange', route);
  on('devices', updateBanner);   // device names in the banner
  on('lang', () => { if (current && views[current] && views[current].onLang) views[current].onLang(); });
  start();
}

async function start() {
  try {
    const me = await api('/me', { quiet401: true });
    startSession(me);
  } catch (e) {
    if (e.status === 401) showLogin();
    else showFatal(e.message);
  }
}

boot();
