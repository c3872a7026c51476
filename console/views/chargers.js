// 充电: the charging devices (category "charger": OCPP chargers and e-bike stations) with their
// connectors or ports and latest points, from GET /devices and /devices/{id}/latest.
import { t, tv } from '../i18n.js';
import {
  store, on, reportError, h, clear, fmtTime, fmtValue, fmtNum, fmtLocation, loadDevices, loadLatest, throttle,
} from '../core.js';
import { statusBadge, pointChips } from './devices.js';

const PORT_RE = /^(connector|port)(\d+)\.(.+)$/;

/** Splits points into connectors/ports ({kind, n, points}) and the rest. */
function splitPoints(points) {
  const ports = new Map();
  const rest = {};
  for (const [name, p] of Object.entries(points || {})) {
    const m = PORT_RE.exec(name);
    if (!m) { rest[name] = p; continue; }
    const key = `${m[1]}${m[2]}`;
    if (!ports.has(key)) ports.set(key, { kind: m[1], n: Number(m[2]), points: {} });
    ports.get(key).points[m[3]] = p;
  }
  return { ports: [...ports.values()].sort((a, b) => a.n - b.n), rest };
}

function portStatus(port) {
  const p = port.points.status || port.points.state;
  return p && p.value != null ? String(p.value) : null;
}

function statusClass(s) {
  const v = String(s || '').toLowerCase();
  if (v === 'charging') return 'charging';
  if (v === 'available' || v === 'idle') return 'free';
  if (v === 'full' || v === 'finishing') return 'full';
  if (v === 'faulted' || v === 'fault') return 'fault';
  if (v === 'unavailable' || !v) return 'off';
  return 'other';
}

function portPower(port) {
  const p = port.points.power_w || port.points.power;
  if (!p || typeof p.value !== 'number') return null;
  return p.unit === 'kW' ? p.value * 1000 : p.value;
}

export function createChargers(root) {
  let active = false;
  let timer = null;

  const title = h('h1');
  const summary = h('span', { class: 'count' });
  const note = h('p', { class: 'note' });
  const list = h('div', { class: 'chargers', 'data-testid': 'charger-list' });
  root.append(h('div', { class: 'page-head' }, h('div', { class: 'title-row' }, title, summary)), note, list);

  function chargers() {
    return [...store.devices.values()].filter((d) => d.category === 'charger')
      .sort((a, b) => String(a.id).localeCompare(String(b.id), 'en', { numeric: true }));
  }

  function portTile(port) {
    const status = portStatus(port);
    const others = Object.entries(port.points).filter(([k]) => k !== 'status' && k !== 'state');
    return h('div', { class: `port port-${statusClass(status)}`, 'data-testid': 'charger-port', 'data-port': `${port.kind}${port.n}`, 'data-status': status || '' },
      h('div', { class: 'port-head' },
        h('span', { class: 'port-name' }, t(port.kind === 'connector' ? 'chargers.connector' : 'chargers.port', { n: port.n })),
        h('span', { class: 'port-status' }, status ? tv('cs', status) : t('common.none'))),
      h('dl', { class: 'port-points' }, others.map(([k, p]) => [
        h('dt', null, k),
        h('dd', null, p.value == null || p.value === '' ? t('common.none') : fmtValue(p.value, p.unit)),
      ])));
  }

  function card(d) {
    const { ports, rest } = splitPoints(store.latest.get(d.id));
    return h('article', { class: 'charger', 'data-testid': 'charger-card', 'data-device-id': d.id },
      h('header', null,
        h('div', null, h('h2', null, d.name || d.id), h('div', { class: 'sub mono' }, `${d.id} · ${d.profile || ''}`)),
        statusBadge(d.online)),
      h('p', { class: 'sub' }, [fmtLocation(d.location), d.last_seen ? fmtTime(d.last_seen) : null].filter(Boolean).join(' · ')),
      d.last_error ? h('p', { class: 'err' }, d.last_error) : null,
      ports.length ? h('div', { class: 'ports' }, ports.map(portTile)) : null,
      Object.keys(rest).length
        ? h('div', { class: 'rest' }, h('h3', null, t('chargers.points')), h('div', { class: 'pts' }, pointChips(rest, 20)))
        : ports.length ? null : h('p', { class: 'muted' }, t('chargers.noPoints')),
    );
  }

  function render() {
    if (!active) return;
    title.textContent = t('chargers.title');
    note.textContent = t('chargers.note');
    const devs = chargers();
    let charging = 0;
    let power = 0;
    for (const d of devs) {
      const { ports, rest } = splitPoints(store.latest.get(d.id));
      for (const p of ports) {
        if (statusClass(portStatus(p)) === 'charging') charging += 1;
        power += portPower(p) || 0;
      }
      if (!ports.some((p) => portPower(p) != null) && rest.power && typeof rest.power.value === 'number') {
        power += rest.power.unit === 'kW' ? rest.power.value * 1000 : rest.power.value;
      }
    }
    summary.textContent = devs.length
      ? [t('chargers.count', { n: devs.length }), t('chargers.charging', { n: charging }),
        t('chargers.power', { p: power >= 1000 ? `${fmtNum(power / 1000, 2)} kW` : `${fmtNum(power, 0)} W` })].join(' · ')
      : '';
    clear(list);
    if (!devs.length) list.append(h('p', { class: 'empty' }, store.devicesLoadedAt ? t('chargers.empty') : t('common.loading')));
    else list.append(...devs.map(card));
  }

  const soon = throttle(render, 1000);

  async function refresh() {
    try {
      await loadDevices();
      await loadLatest(chargers().map((d) => d.id));
    } catch (e) {
      reportError(e);
    }
  }

  function isCharger(id) {
    const d = store.devices.get(id);
    return d && d.category === 'charger';
  }

  on('devices', () => { if (active) render(); });
  on('latest', (id) => { if (active && isCharger(id)) soon(); });
  on('reading', (r) => { if (active && isCharger(r.device_id)) soon(); });
  on('device', (d) => { if (active && isCharger(d.device_id)) soon(); });
  on('resync', ({ initial }) => { if (active && !initial) refresh(); });

  return {
    enter() {
      active = true;
      render();
      refresh();
      clearInterval(timer);
      timer = setInterval(refresh, 30000);
    },
    leave() {
      active = false;
      clearInterval(timer);
    },
    onLang() { render(); },
  };
}
