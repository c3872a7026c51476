// Shared state, the API client, DOM and formatting helpers of the console.
import { t, getLang } from './i18n.js';

/** What the console knows; the views read it and the live stream keeps it current. */
export const store = {
  me: null,               // GET /me
  tz: undefined,          // the park's time zone (hub.timezone); undefined = the browser's
  alarms: new Map(),      // id → alarm (active ones, or all when the alarm page shows all)
  alarmMode: 'active',    // 'active' | 'all'
  devices: new Map(),     // id → device of GET /devices
  latest: new Map(),      // device id → { point: {value, unit, ts} }
  devicesLoadedAt: 0,
};

// A tiny event bus: 'alarm', 'alarms', 'device', 'reading', 'devices', 'resync', 'lang', 'session'.
const bus = new EventTarget();
export function emit(type, detail) {
  bus.dispatchEvent(new CustomEvent(type, { detail }));
}
export function on(type, fn) {
  bus.addEventListener(type, (e) => fn(e.detail));
}

export function canOperate() {
  const r = store.me && store.me.role;
  return r === 'operator' || r === 'admin';
}

// ---- API --------------------------------------------------------------------------------------

export class ApiError extends Error {
  constructor(status, message, body, headers) {
    super(message);
    this.status = status;
    this.body = body;
    this.headers = headers;
  }
}

let unauthorized = () => {};
let toaster = () => {};
export function setUnauthorizedHandler(fn) { unauthorized = fn; }
export function setToaster(fn) { toaster = fn; }

/**
 * Calls `/api/v1${path}`. Throws ApiError on a non-2xx answer, with the server's `error` text.
 * A 401 also shows the login form unless `quiet401` is set.
 */
export async function api(path, { method = 'GET', body, quiet401 = false } = {}) {
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch('/api/v1' + path, init);
  } catch (e) {
    throw new ApiError(0, t('err.network'));
  }
  const text = res.status === 204 ? '' : await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!res.ok) {
    const msg = (data && typeof data.error === 'string' && data.error) || `HTTP ${res.status}`;
    const err = new ApiError(res.status, msg, data, res.headers);
    if (res.status === 401 && !quiet401) unauthorized();
    throw err;
  }
  return data;
}

/** Shows an API error to the user (a 401 has already brought up the login form). */
export function reportError(err) {
  if (err && err.status === 401) return;
  console.warn(err);
  const msg = (err && err.message) || String(err);
  if (err && err.status === 403) toaster(t('err.forbidden', { msg }), 'error');
  else toaster(t('err.generic', { msg }), 'error');
}

export function toast(msg, kind) { toaster(msg, kind); }

// ---- DOM --------------------------------------------------------------------------------------

/** Creates an element: h('td', {class: 'x', 'data-label': 'y', onclick}, 'text', child…). */
export function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v == null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (v === true) el.setAttribute(k, '');
      else el.setAttribute(k, v);
    }
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid == null || kid === false) continue;
    el.append(kid instanceof Node ? kid : String(kid));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function $(sel, root = document) { return root.querySelector(sel); }

// ---- formatting -------------------------------------------------------------------------------

const dtfCache = new Map();
function dtf(opts) {
  const key = getLang() + '|' + (store.tz || '') + '|' + JSON.stringify(opts);
  let f = dtfCache.get(key);
  if (!f) {
    try {
      f = new Intl.DateTimeFormat('en-GB', { ...opts, timeZone: store.tz, hourCycle: 'h23' });
    } catch {
      f = new Intl.DateTimeFormat('en-GB', { ...opts, hourCycle: 'h23' });
    }
    dtfCache.set(key, f);
  }
  return f;
}

function parts(date, opts) {
  const out = {};
  for (const p of dtf(opts).formatToParts(date)) out[p.type] = p.value;
  return out;
}

function toDate(ts) {
  if (ts == null || ts === '') return null;
  const d = typeof ts === 'number' ? new Date(ts * 1000) : new Date(ts);
  return isNaN(d) ? null : d;
}

/** "2026-11-26 16:00:05" in the park's time zone. */
export function fmtTime(ts) {
  const d = toDate(ts);
  if (!d) return t('common.none');
  const p = parts(d, { year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit' });
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second}`;
}

/** "11-26 16:00:05": today's times without the year. */
export function fmtShortTime(ts) {
  const d = toDate(ts);
  if (!d) return t('common.none');
  const p = parts(d, { month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit' });
  return `${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second}`;
}

/** A bucket start of the energy report, as fits its period. */
export function fmtBucket(ts, period) {
  const d = toDate(ts);
  if (!d) return t('common.none');
  const p = parts(d, { year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit' });
  if (period === 'month') return `${p.year}-${p.month}`;
  if (period === 'day') return `${p.year}-${p.month}-${p.day}`;
  return `${p.month}-${p.day} ${p.hour}:${p.minute}`;
}

export function fmtNum(v, maxDigits = 2) {
  if (v == null || typeof v !== 'number' || !isFinite(v)) return t('common.none');
  const digits = Math.abs(v) >= 1000 ? Math.min(maxDigits, 1) : maxDigits;
  return v.toLocaleString(getLang() === 'en' ? 'en-US' : 'zh-CN', { maximumFractionDigits: digits });
}

/** A point value: number, bool or string, with its unit. */
export function fmtValue(value, unit) {
  let s;
  if (value === true) s = t('val.true');
  else if (value === false) s = t('val.false');
  else if (typeof value === 'number') s = fmtNum(value);
  else if (value == null) s = t('common.none');
  else s = String(value);
  return unit && typeof value === 'number' ? `${s} ${unit}` : s;
}

/** "3号楼 · 2F · 东走廊" from a location object (keys absent when unset). */
export function fmtLocation(loc) {
  if (!loc) return '';
  return [loc.building, loc.floor, loc.zone, loc.room].filter(Boolean).join(' · ');
}

export function deviceName(id) {
  const d = store.devices.get(id);
  return d && d.name ? d.name : id;
}

export const SEVERITIES = ['critical', 'major', 'minor', 'warning'];
export const CATEGORIES = ['fire', 'security', 'lift', 'energy', 'charger', 'environment', 'comm'];
export function sevRank(s) {
  const i = SEVERITIES.indexOf(s);
  return i < 0 ? SEVERITIES.length : i;
}

export function statusOf(online) {
  return online === true ? 'online' : online === false ? 'offline' : 'unknown';
}

/** Calls fn at most once per `ms`, trailing. */
export function throttle(fn, ms) {
  let timer = null;
  let pending = false;
  return function throttled() {
    if (timer) { pending = true; return; }
    fn();
    timer = setTimeout(function tick() {
      if (pending) { pending = false; fn(); timer = setTimeout(tick, ms); } else timer = null;
    }, ms);
  };
}

// ---- devices (shared by the device and charger pages) -----------------------------------------

export async function loadDevices() {
  const list = await api('/devices');
  const next = new Map();
  for (const d of list || []) next.set(d.id, d);
  store.devices = next;
  store.devicesLoadedAt = Date.now();
  emit('devices');
  return next;
}

/** Fetches the latest points of these devices, a few at a time. */
export async function loadLatest(ids) {
  const queue = [...ids];
  const worker = async () => {
    while (queue.length) {
      const id = queue.shift();
      try {
        const pts = await api(`/devices/${encodeURIComponent(id)}/latest`);
        store.latest.set(id, pts || {});
        emit('latest', id);
      } catch (e) {
        if (e.status === 401) return;
        if (e.status !== 404) console.warn('latest', id, e);
      }
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
}
