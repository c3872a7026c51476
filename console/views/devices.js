// 设备: every device with its status, latest values, communication statistics and last error.
import { t, tv } from '../i18n.js';
import {
  store, on, reportError, h, clear, fmtTime, fmtValue, fmtNum, fmtLocation, statusOf, loadDevices, loadLatest, throttle,
} from '../core.js';

const MAX_POINTS = 8;
// The points a person looks for first; the rest follow in name order.
const PRIORITY = ['status', 'state', 'event', 'smoke', 'open', 'forced', 'leak', 'trapped', 'power_total', 'power',
  'energy_import', 'energy', 'voltage', 'voltage_a', 'current', 'current_a', 'flow_rate', 'volume_total',
  'temperature', 'humidity', 'pm25', 'noise_db', 'floor', 'moving', 'door_open', 'battery', 'tamper', 'frequency', 'pf_total'];

function byPriority(a, b) {
  const ia = PRIORITY.indexOf(a);
  const ib = PRIORITY.indexOf(b);
  if (ia !== ib) return (ia < 0 ? Infinity : ia) - (ib < 0 ? Infinity : ib);
  return a.localeCompare(b, 'en', { numeric: true });
}

function matches(d, q) {
  if (!q) return true;
  const loc = d.location || {};
  const hay = [d.id, d.name, d.profile, d.category, loc.building, loc.floor, loc.zone, loc.room, loc.tenant]
    .filter(Boolean).join('\n').toLowerCase();
  return q.split(/\s+/).every((w) => hay.includes(w));
}

/** Compact "voltage_a 229.8 V" chips; the rest summed up as "N more". */
export function pointChips(points, max = MAX_POINTS) {
  const names = Object.keys(points || {}).sort(byPriority);
  if (!names.length) return [h('span', { class: 'muted' }, t('common.none'))];
  const out = names.slice(0, max).map((n) => {
    const p = points[n] || {};
    return h('span', { class: 'pt', title: p.ts ? `${n} · ${fmtTime(p.ts)}` : n, 'data-point': n },
      h('span', { class: 'pt-name' }, n), ' ', h('span', { class: 'pt-val' }, fmtValue(p.value, p.unit)));
  });
  if (names.length > max) {
    out.push(h('span', { class: 'pt more', title: names.slice(max).join(', ') }, t('devices.more', { n: names.length - max })));
  }
  return out;
}

function commStats(s) {
  if (!s) return t('common.none');
  const parts = [];
  const bits = (k, v, cls) => h('span', { class: `cs ${cls || ''}` }, h('span', { class: 'cs-k' }, t(k)), ' ', h('span', { class: 'cs-v' }, v));
  if (s.polls || s.requests || !(s.messages || s.rejected)) {
    parts.push(bits('devices.polls', fmtNum(s.polls ?? 0, 0)));
    parts.push(bits('devices.errors', fmtNum(s.errors ?? 0, 0), s.errors ? 'warn' : ''));
    parts.push(bits('devices.timeouts', fmtNum(s.timeouts ?? 0, 0), s.timeouts ? 'warn' : ''));
    if (s.rtt_avg_ms != null) parts.push(bits('devices.rtt', `${fmtNum(s.rtt_avg_ms, 1)} ms`));
  }
  if (s.messages || s.rejected) {
    parts.push(bits('devices.messages', fmtNum(s.messages ?? 0, 0)));
    if (s.rejected) parts.push(bits('devices.rejected', fmtNum(s.rejected, 0), 'warn'));
  }
  return parts;
}

export function statusBadge(online) {
  const s = statusOf(online);
  return h('span', { class: `status status-${s}` }, h('span', { class: 'dot', 'aria-hidden': 'true' }), tv('status', s));
}

export function createDevices(root) {
  let active = false;
  let timer = null;
  let latestLoadedAt = 0;
  const rows = new Map();   // id → tr
  const dirty = new Set();

  const title = h('h1');
  const count = h('span', { class: 'count' });
  const searchLabel = h('label', { for: 'device-search', class: 'visually-hidden' });
  const search = h('input', {
    id: 'device-search', type: 'search', 'data-testid': 'device-search', autocomplete: 'off', spellcheck: 'false',
    oninput: () => { syncQuery(); render(); },
  });
  const head = h('thead');
  const body = h('tbody');
  const table = h('table', { class: 'grid cards-on-phone devices-table', 'data-testid': 'device-table' }, head, body);
  const empty = h('p', { class: 'empty', hidden: true });
  root.append(
    h('div', { class: 'page-head' }, h('div', { class: 'title-row' }, title, count),
      h('div', { class: 'search' }, searchLabel, search)),
    h('div', { class: 'table-wrap' }, table),
    empty,
  );

  function syncQuery() {
    const q = search.value.trim();
    const want = q ? `#/devices?q=${encodeURIComponent(q)}` : '#/devices';
    if (location.hash !== want) history.replaceState(null, '', want);
  }

  function renderStatic() {
    title.textContent = t('devices.title');
    searchLabel.textContent = t('devices.search');
    search.placeholder = t('devices.searchPlaceholder');
    search.setAttribute('aria-label', t('devices.search'));
    clear(head).append(h('tr', null, ['status', 'device', 'category', 'location', 'values', 'comm', 'lastSeen', 'error']
      .map((c) => h('th', { scope: 'col', class: `col-${c}` }, t(`devices.col.${c}`)))));
  }

  function fillRow(tr, d) {
    tr.dataset.deviceId = d.id;
    tr.dataset.status = statusOf(d.online);
    tr.className = `device status-row-${statusOf(d.online)}`;
    clear(tr).append(
      h('td', { class: 'col-status', 'data-label': t('devices.col.status') }, statusBadge(d.online)),
      h('td', { class: 'col-device', 'data-label': t('devices.col.device') },
        h('div', null, d.name || d.id), h('div', { class: 'sub mono' }, d.id)),
      h('td', { class: 'col-category', 'data-label': t('devices.col.category') },
        h('div', null, tv('dcat', d.category)), h('div', { class: 'sub mono' }, d.profile || '')),
      h('td', { class: 'col-location', 'data-label': t('devices.col.location') },
        fmtLocation(d.location) || t('common.none'),
        d.location && d.location.tenant ? h('div', { class: 'sub' }, d.location.tenant) : null),
      h('td', { class: 'col-values', 'data-label': t('devices.col.values') },
        h('div', { class: 'pts' }, pointChips(store.latest.get(d.id)))),
      h('td', { class: 'col-comm', 'data-label': t('devices.col.comm') }, h('div', { class: 'cstats' }, commStats(d.stats))),
      h('td', { class: 'col-lastSeen nowrap', 'data-label': t('devices.col.lastSeen') }, d.last_seen ? fmtTime(d.last_seen) : t('common.none')),
      h('td', { class: 'col-error', 'data-label': t('devices.col.error') },
        d.last_error ? h('span', { class: 'err' }, d.last_error) : t('common.none')),
    );
  }

  function render() {
    if (!active) return;
    const q = search.value.trim().toLowerCase();
    const all = [...store.devices.values()];
    const list = all.filter((d) => matches(d, q));
    clear(body);
    for (const d of list) {
      let tr = rows.get(d.id);
      if (!tr) {
        tr = h('tr', { 'data-testid': 'device-row' });
        rows.set(d.id, tr);
        dirty.add(d.id);
      }
      if (dirty.has(d.id)) fillRow(tr, d);
      body.append(tr);
    }
    dirty.clear();
    for (const id of rows.keys()) if (!store.devices.has(id)) rows.delete(id);
    count.textContent = t('devices.count', { n: list.length, total: all.length });
    empty.textContent = t('devices.empty');
    empty.hidden = list.length > 0 || !all.length;
    table.hidden = list.length === 0;
  }

  const flush = throttle(() => {
    if (!active || !dirty.size) return;
    for (const id of dirty) {
      const tr = rows.get(id);
      const d = store.devices.get(id);
      if (tr && d) fillRow(tr, d);
    }
    dirty.clear();
  }, 500);

  async function refresh(withLatest) {
    try {
      await loadDevices();
      if (withLatest || Date.now() - latestLoadedAt > 300000) {
        latestLoadedAt = Date.now();
        await loadLatest([...store.devices.keys()]);
      }
    } catch (e) {
      reportError(e);
    }
  }

  function markAll() { for (const id of rows.keys()) dirty.add(id); }

  on('devices', () => { markAll(); render(); });
  on('latest', (id) => { dirty.add(id); flush(); });
  on('reading', (r) => { dirty.add(r.device_id); if (active) flush(); });
  on('device', (d) => { dirty.add(d.device_id); if (active) flush(); });
  on('resync', ({ initial }) => { if (active && !initial) refresh(true); });

  return {
    enter(params) {
      active = true;
      renderStatic();
      search.value = params.get('q') || '';
      markAll();
      render();
      refresh(true);
      clearInterval(timer);
      timer = setInterval(() => refresh(false), 15000);   // statistics are not streamed
    },
    leave() {
      active = false;
      clearInterval(timer);
    },
    onLang() { renderStatic(); markAll(); render(); },
  };
}
