// 充电: EV chargers (OCPP) and e-bike stations — every port's live state, running sessions and
// the chargers' fault alarms (GET /chargers, kept live by the stream), the charging log
// (GET /sessions), and operators' commands to EV chargers with the charger's own answer.
import { t, tv } from '../i18n.js';
import {
  store, on, api, reportError, toast, canOperate, h, $, fmtTime, fmtShortTime, fmtBucket, fmtNum,
  fmtLocation, deviceName, sevRank,
} from '../core.js';

const REFRESH_MS = 12000;          // fallback refetch of /chargers while the page shows
const SESSIONS_MS = 30000;         // fallback refetch of the charging log
const SESSIONS_LIMIT = 100;
const HOT_C = 60;                  // an e-bike port this warm is a fire risk
const OK_ANSWERS = ['Accepted', 'Unlocked', 'Scheduled'];

// Reading point of a port → field of the API's port object.
const EV_FIELDS = { status: 'status', error_code: 'error_code', power: 'power_w', energy: 'energy_kwh', temperature: 'temperature', soc: 'soc' };
const EBIKE_FIELDS = { state: 'status', fault: 'error_code', power_w: 'power_w', temperature: 'temperature', energy: 'energy_kwh' };
const PORT_RE = /^(connector|port)(\d+)\.(.+)$/;

/** The colour class of a port's state. */
export function portClass(status) {
  switch (String(status || '').toLowerCase()) {
    case 'charging': return 'charging';
    case 'available': case 'idle': return 'free';
    case 'preparing': case 'finishing': return 'busy';
    case 'suspendedev': case 'suspendedevse': return 'suspended';
    case 'reserved': return 'reserved';
    case 'full': return 'full';
    case 'faulted': case 'fault': return 'fault';
    case 'unavailable': return 'off';
    default: return 'unknown';
  }
}

function isOnline(c) {
  return c.kind === 'ev' ? c.connected === true : c.online === true;
}

function watts(v, unit) {
  if (typeof v !== 'number' || !isFinite(v)) return null;
  return unit === 'kW' ? v * 1000 : v;
}

function fmtPower(w) {
  if (w == null) return t('common.none');
  return Math.abs(w) >= 1000 ? `${fmtNum(w / 1000, 2)} kW` : `${fmtNum(w, 0)} W`;
}

function fmtKwh(v) {
  return typeof v === 'number' ? `${fmtNum(v, 2)} kWh` : t('common.none');
}

function noFault(code) {
  return code == null || code === '' || code === 'NoError' || code === 'none' || code === 'no_load';
}

function portLabel(c, n) {
  return t(c.kind === 'ev' ? 'chargers.connector' : 'chargers.port', { n });
}

function dayOf(ts) {
  return fmtBucket(ts, 'day');
}

export function createChargers(root) {
  let active = false;
  let timer = null;
  let sessionsTimer = null;
  let renderTimer = null;
  let seq = 0;
  let sessionsSeq = 0;
  let loaded = false;
  let loadedAt = null;
  let loadError = null;
  const chargers = new Map();        // id → charger of GET /chargers
  const cards = new Map();           // id → card element
  const dirty = new Set();           // ids whose card is to be drawn again
  const answers = new Map();         // id → the last command's outcome {ok, status, text, at, action}
  const oneTimers = new Map();       // id → debounce of GET /chargers/{id}
  let sessions = [];                 // the table's rows
  let recent = [];                   // the newest sessions of every charger (for "today")
  let sessionsLoaded = false;
  let sessionsSoonTimer = null;
  let filter = '';

  // ---- skeleton -------------------------------------------------------------------------------
  const title = h('h1');
  const updated = h('span', { class: 'muted small' });
  const summary = h('div', { class: 'cards charger-summary', 'data-testid': 'charger-summary' });
  const list = h('div', { class: 'chargers', 'data-testid': 'charger-list' });
  const empty = h('p', { class: 'empty' });
  const sessionsTitle = h('h2');
  const filterLabel = h('label', { for: 'session-device', class: 'visually-hidden' });
  const filterSel = h('select', {
    id: 'session-device', 'data-testid': 'session-device',
    onchange: () => { filter = filterSel.value; sessions = []; sessionsLoaded = false; renderSessions(); loadSessions(); },
  });
  const sessionsNote = h('p', { class: 'muted small sessions-note' });
  const head = h('thead');
  const body = h('tbody');
  const table = h('table', { class: 'grid cards-on-phone sessions-table', 'data-testid': 'sessions-table' }, head, body);
  const sessionsEmpty = h('p', { class: 'empty' });
  root.append(
    h('div', { class: 'page-head' }, h('div', { class: 'title-row' }, title, updated)),
    summary, empty, list,
    h('div', { class: 'section-head' }, sessionsTitle, h('div', { class: 'field' }, filterLabel, filterSel)),
    sessionsNote,
    h('div', { class: 'table-wrap' }, table),
    sessionsEmpty,
  );

  // ---- loading --------------------------------------------------------------------------------
  function sorted() {
    return [...chargers.values()].sort((a, b) => String(a.id).localeCompare(String(b.id), 'en', { numeric: true }));
  }

  async function load() {
    const s = ++seq;
    try {
      const list = await api('/chargers');
      if (s !== seq) return;
      const seen = new Set();
      for (const c of list || []) {
        seen.add(c.id);
        const prev = chargers.get(c.id);
        if (!prev || JSON.stringify(prev) !== JSON.stringify(c)) dirty.add(c.id);
        chargers.set(c.id, c);
      }
      for (const id of [...chargers.keys()]) if (!seen.has(id)) chargers.delete(id);
      loaded = true;
      loadError = null;
      loadedAt = new Date();
      render();
    } catch (e) {
      if (s !== seq) return;
      loadError = e;
      if (!loaded) render();
      reportError(e);
    }
  }

  /** GET /chargers/{id} soon: a port changed state, and its session is not in the readings. */
  function loadOneSoon(id, ms = 300) {
    clearTimeout(oneTimers.get(id));
    oneTimers.set(id, setTimeout(async () => {
      oneTimers.delete(id);
      const s = seq;
      try {
        const c = await api(`/chargers/${encodeURIComponent(id)}`);
        if (s !== seq || !c) return;    // a full load started since: it is at least as new
        chargers.set(c.id, c);
        dirty.add(c.id);
        renderSoon();
      } catch (e) {
        if (e.status !== 404) reportError(e);
      }
    }, ms));
  }

  async function loadSessions() {
    const s = ++sessionsSeq;
    try {
      const all = api(`/sessions?limit=${SESSIONS_LIMIT * 2}`);
      const mine = filter
        ? api(`/sessions?device=${encodeURIComponent(filter)}&limit=${SESSIONS_LIMIT}`)
        : null;
      const [a, m] = await Promise.all([all, mine]);
      if (s !== sessionsSeq) return;
      recent = a || [];
      sessions = filter ? (m || []) : recent.slice(0, SESSIONS_LIMIT);
      sessionsLoaded = true;
      renderSessions();
      renderSummary();
    } catch (e) {
      if (s !== sessionsSeq) return;
      if (e.status === 404 && filter) {   // the charger left the config
        filter = '';
        loadSessions();
        return;
      }
      reportError(e);
    }
  }

  function sessionsSoon(ms = 1500) {
    if (sessionsSoonTimer) return;
    sessionsSoonTimer = setTimeout(() => { sessionsSoonTimer = null; if (active) loadSessions(); }, ms);
  }

  // ---- live updates ---------------------------------------------------------------------------
  function applyReading(r) {
    const c = chargers.get(r.device_id);
    if (!c) return;
    const m = PORT_RE.exec(r.point);
    if (!m) {
      if (c.kind === 'ev') {
        if (r.point === 'status') c.status = r.value == null ? null : String(r.value);
        else if (r.point === 'error_code') c.error_code = r.value == null ? null : String(r.value);
        else if (r.point === 'power') c.power_w = watts(r.value, r.unit);
        else return;
      } else if (r.point === 'smoke') {
        c.smoke = r.value === true || r.value === 1;
      } else return;
      dirty.add(c.id);
      renderSoon();
      return;
    }
    const n = Number(m[2]);
    const key = m[3];
    const fields = c.kind === 'ev' ? EV_FIELDS : EBIKE_FIELDS;
    let port = c.ports.find((p) => p.port === n);
    if (key === 'session_energy') {
      if (port && port.session && typeof r.value === 'number') port.session.energy_kwh = r.value;
      else if (port && !port.session) loadOneSoon(c.id);
      sessionsSoon(3000);
    } else {
      const field = fields[key];
      if (!field) return;
      if (!port) {
        port = { port: n, status: null, error_code: null, power_w: null, energy_kwh: null, temperature: null, session: null };
        c.ports.push(port);
        c.ports.sort((a, b) => a.port - b.port);
      }
      let v = r.value;
      if (field === 'power_w') v = watts(v, r.unit);
      else if (field === 'status') v = v == null ? null : String(v);
      else if (field === 'error_code') v = v == null || v === 'none' || v === 'null' || v === '' ? null : String(v);
      else if (typeof v !== 'number') v = null;
      const changed = port[field] !== v;
      port[field] = v;
      if (field === 'status' && changed) {
        // A session starts or ends with a status change: its details come from the API.
        if (c.kind === 'ev') { loadOneSoon(c.id); sessionsSoon(); }
      }
      if (c.kind === 'ebike' && field === 'power_w') {
        c.power_w = c.ports.reduce((s, p) => s + (p.power_w || 0), 0);
      }
    }
    if (r.ts) c.last_seen = r.ts;
    dirty.add(c.id);
    renderSoon();
  }

  function renderSoon() {
    if (!active || renderTimer) return;
    renderTimer = setTimeout(() => { renderTimer = null; render(); }, 250);
  }

  on('reading', (r) => { if (active && chargers.has(r.device_id)) applyReading(r); });
  on('device', (d) => {
    const c = chargers.get(d.device_id);
    if (!active || !c) return;
    if ('online' in d) c.online = d.online;
    if (d.online && d.ts) c.last_seen = d.ts;
    dirty.add(c.id);
    if (c.kind === 'ev') loadOneSoon(c.id);
    renderSoon();
  });
  on('alarm', ({ alarm }) => {
    if (!active || !alarm || !chargers.has(alarm.device_id)) return;
    dirty.add(alarm.device_id);
    renderSoon();
  });
  on('alarms', () => { if (!active) return; for (const id of chargers.keys()) dirty.add(id); renderSoon(); });
  on('session', () => { answers.clear(); for (const id of chargers.keys()) dirty.add(id); });
  on('resync', ({ initial }) => { if (active && !initial) { load(); loadSessions(); } });

  // ---- commands -------------------------------------------------------------------------------
  const dialog = $('#cmd-dialog');
  let pending = null;   // {id, body, what, n}

  /** "停止充电 · 1号枪": what a command does, in the current language. */
  function commandLabel(c, what, n) {
    const text = t(`cmd.${what}`);
    return n ? `${text} · ${portLabel(c, n)}` : text;
  }

  /** Asks before sending `body`; `what` names it (cmd.*), `n` is the port it is for. */
  function openCommand(c, body, what, warn, n) {
    pending = { id: c.id, body, what, n };
    const label = commandLabel(c, what, n);
    $('#cmd-title').textContent = label;
    $('#cmd-subject').textContent = `${c.name || c.id}${n ? ` · ${portLabel(c, n)}` : ''}`;
    const warnEl = $('#cmd-warn');
    warnEl.textContent = warn || '';
    warnEl.hidden = !warn;
    $('#cmd-reset').hidden = body.action !== 'Reset';
    $('#cmd-reset-soft').checked = true;
    $('#cmd-error').hidden = true;
    const ok = $('#cmd-confirm');
    ok.disabled = false;
    ok.textContent = t('cmd.send');
    dialog.showModal();
    ok.focus();
  }

  function answerText(status) {
    const label = tv('ans', status);
    return t('cmd.answer', { status: label !== status ? t('cmd.answerLabel', { status, label }) : status });
  }

  function errorText(http, msg) {
    if (http === 409) return t('cmd.notConnected', { msg });
    if (http === 502) return t('cmd.refused', { msg });
    if (http === 504) return t('cmd.noAnswer', { msg });
    if (http === 403) return t('err.forbidden', { msg });
    return t('err.generic', { msg });
  }

  /** The outcome of the last command, in the current language. */
  function outcomeText(a) {
    return a.status === 'error' ? errorText(a.http, a.msg) : answerText(a.status);
  }

  async function submitCommand(ev) {
    ev.preventDefault();
    if (!pending) return;
    const { id, what, n } = pending;
    const c = chargers.get(id) || { id, kind: 'ev' };
    const body = { ...pending.body };
    if (body.action === 'Reset') body.type = $('#cmd-reset-hard').checked ? 'Hard' : 'Soft';
    const btn = $('#cmd-confirm');
    btn.disabled = true;
    btn.textContent = t('cmd.sending');
    try {
      const res = await api(`/chargers/${encodeURIComponent(id)}/commands`, { method: 'POST', body });
      const status = (res && res.status) || '';
      const ok = OK_ANSWERS.includes(status);
      const a = { ok, status, what, n, at: new Date() };
      answers.set(id, a);
      toast(`${deviceName(id)} · ${commandLabel(c, what, n)}: ${outcomeText(a)}`, ok ? 'info' : 'error');
    } catch (e) {
      if (e.status === 401) { dialog.close(); pending = null; return; }
      const a = { ok: false, status: 'error', http: e.status, msg: e.message, what, n, at: new Date() };
      answers.set(id, a);
      toast(`${deviceName(id)} · ${commandLabel(c, what, n)}: ${outcomeText(a)}`, 'error');
    }
    pending = null;
    dialog.close();
    dirty.add(id);
    render();
    loadOneSoon(id, 800);
    sessionsSoon(1500);
  }

  $('#cmd-form').addEventListener('submit', submitCommand);
  for (const b of dialog.querySelectorAll('[data-close]')) b.addEventListener('click', () => { pending = null; dialog.close(); });

  function cmdButton(c, key, testid, text, onclick, danger) {
    return h('button', {
      type: 'button', class: `small${danger ? ' danger' : ''}`, 'data-testid': testid, 'data-key': `${c.id}|${key}`,
      disabled: c.connected === false, title: c.connected === false ? t('cmd.offline') : null, onclick,
    }, text);
  }

  function portActions(c, p) {
    if (c.kind !== 'ev' || !canOperate()) return null;
    const n = p.port;
    const off = portClass(p.status) === 'off';
    return h('div', { class: 'port-actions' },
      p.session ? cmdButton(c, `stop${n}`, 'cmd-stop', t('cmd.stop'), () => openCommand(c,
        { action: 'RemoteStopTransaction', transaction_id: p.session.transaction_id }, 'stop',
        t('cmd.stopWarn', { tag: p.session.id_tag, tx: p.session.transaction_id }), n), true) : null,
      cmdButton(c, `unlock${n}`, 'cmd-unlock', t('cmd.unlock'), () => openCommand(c,
        { action: 'UnlockConnector', connector: n }, 'unlock', p.session ? t('cmd.unlockWarn') : null, n)),
      cmdButton(c, `avail${n}`, off ? 'cmd-enable' : 'cmd-disable', off ? t('cmd.enable') : t('cmd.disable'), () => openCommand(c,
        { action: 'ChangeAvailability', connector: n, type: off ? 'Operative' : 'Inoperative' },
        off ? 'enable' : 'disable', off ? null : t('cmd.disableWarn'), n)),
    );
  }

  function chargerActions(c) {
    if (c.kind !== 'ev' || !canOperate()) return null;
    const off = portClass(c.status) === 'off';
    return h('div', { class: 'charger-actions' },
      cmdButton(c, 'reset', 'cmd-reset', t('cmd.reset'), () => openCommand(c, { action: 'Reset', type: 'Soft' }, 'reset',
        t('cmd.resetWarn'))),
      cmdButton(c, 'avail0', off ? 'cmd-charger-enable' : 'cmd-charger-disable',
        off ? t('cmd.enableAll') : t('cmd.disableAll'), () => openCommand(c,
          { action: 'ChangeAvailability', connector: 0, type: off ? 'Operative' : 'Inoperative' },
          off ? 'enableAll' : 'disableAll', off ? null : t('cmd.disableWarn'))),
    );
  }

  // ---- drawing --------------------------------------------------------------------------------
  function alarmsOf(id) {
    const out = [];
    for (const a of store.alarms.values()) if (a.device_id === id && a.state !== 'normal') out.push(a);
    out.sort((a, b) => sevRank(a.severity) - sevRank(b.severity) || String(b.raised_at).localeCompare(String(a.raised_at)));
    return out;
  }

  /** The port an alarm's point belongs to (`connector2.error_code` → 2). */
  function alarmPort(a) {
    const m = a.point && PORT_RE.exec(a.point);
    return m ? Number(m[2]) : null;
  }

  function metric(label, value, cls) {
    return [h('dt', null, label), h('dd', { class: cls || null }, value)];
  }

  function portTile(c, p, alarmed) {
    const cls = portClass(p.status);
    const hot = c.kind === 'ebike' && typeof p.temperature === 'number' && p.temperature >= HOT_C;
    const fault = !noFault(p.error_code);
    const s = p.session;
    const energy = c.kind === 'ev'
      ? (s ? metric(t('chargers.sessionEnergy'), fmtKwh(s.energy_kwh)) : metric(t('chargers.meter'), fmtKwh(p.energy_kwh)))
      : metric(t('chargers.energy'), fmtKwh(p.energy_kwh));
    return h('div', {
      class: `port port-${cls}${alarmed ? ' has-alarm' : ''}${hot ? ' is-hot' : ''}`,
      'data-testid': 'charger-port', 'data-port': p.port, 'data-status': p.status || '', 'data-state': cls,
    },
    h('div', { class: 'port-head' },
      h('span', { class: 'port-name' }, portLabel(c, p.port)),
      h('span', { class: 'port-status', 'data-testid': 'port-status' }, p.status ? tv('cs', p.status) : t('common.none'))),
    fault ? h('div', { class: `port-error${cls === 'fault' ? '' : ' mild'}`, 'data-testid': 'port-error', title: p.info || null },
      tv('ec', p.error_code), p.info ? ` · ${p.info}` : null) : null,
    h('dl', { class: 'port-metrics' },
      metric(t('chargers.power'), fmtPower(p.power_w)),
      metric(t('chargers.temperature'), typeof p.temperature === 'number' ? `${fmtNum(p.temperature, 1)} °C` : t('common.none'), hot ? 'hot' : null),
      energy,
      typeof p.soc === 'number' ? metric('SoC', `${fmtNum(p.soc, 0)} %`) : null),
    s ? h('div', { class: 'port-session', 'data-testid': 'port-session', 'data-transaction-id': s.transaction_id },
      h('span', { class: 'mono', title: t('sessions.col.tag') }, s.id_tag), ' · ',
      h('span', { title: fmtTime(s.started_at) }, t('chargers.since', { t: fmtShortTime(s.started_at) }))) : null,
    portActions(c, p));
  }

  function badge(cls, text, testid) {
    return h('span', { class: `badge badge-${cls}`, 'data-testid': testid || null }, text);
  }

  function card(c) {
    const online = isOnline(c);
    const alarms = alarmsOf(c.id);
    const alarmPorts = new Set(alarms.map(alarmPort).filter((n) => n != null));
    const boot = c.boot;
    const answer = answers.get(c.id);
    const badges = [
      badge('kind', t(c.kind === 'ev' ? 'chargers.kind.ev' : 'chargers.kind.ebike')),
      c.kind === 'ev'
        ? badge(c.connected ? 'ok' : 'bad', t(c.connected ? 'chargers.connected' : 'chargers.disconnected'), 'charger-link')
        : badge(c.online === true ? 'ok' : c.online === false ? 'bad' : 'dim', tv('status', c.online === true ? 'online' : c.online === false ? 'offline' : 'unknown'), 'charger-link'),
    ];
    if (c.kind === 'ebike' && c.smoke === true) badges.push(badge('fire', t('chargers.smoke'), 'charger-smoke'));
    else if (c.kind === 'ebike' && c.smoke === false) badges.push(badge('dim', t('chargers.noSmoke')));
    if (c.kind === 'ev' && portClass(c.status) === 'fault') badges.push(badge('fire', `${t('chargers.wholeFault')} ${tv('ec', c.error_code)}`));
    else if (c.kind === 'ev' && portClass(c.status) === 'off') badges.push(badge('dim', t('chargers.wholeOff')));
    else if (c.kind === 'ev' && !noFault(c.error_code)) badges.push(badge('warn', tv('ec', c.error_code)));

    const facts = [fmtLocation(c.location)];
    if (c.kind === 'ev' && boot) {
      facts.push([boot.vendor, boot.model].filter(Boolean).join(' '));
      if (boot.firmware) facts.push(t('chargers.firmware', { v: boot.firmware }));
      if (boot.serial) facts.push(`SN ${boot.serial}`);
    }
    const seen = c.last_seen ? t('chargers.lastSeen', { t: fmtShortTime(c.last_seen) }) : null;
    let charging = 0;
    for (const p of c.ports) if (portClass(p.status) === 'charging') charging += 1;

    return h('article', {
      class: `charger kind-${c.kind}${online ? '' : ' is-offline'}${alarms.length ? ' has-alarms' : ''}${c.smoke ? ' has-smoke' : ''}`,
      'data-testid': 'charger-card', 'data-device-id': c.id, 'data-kind': c.kind, 'data-online': String(online),
    },
    h('header', { class: 'charger-head' },
      h('div', { class: 'charger-title' },
        h('h2', null, c.name || c.id),
        h('div', { class: 'sub mono' }, [c.id, c.charge_point_id && c.charge_point_id !== c.id ? `CP ${c.charge_point_id}` : null].filter(Boolean).join(' · '))),
      h('div', { class: 'charger-power', title: t('chargers.totalPower') },
        h('span', { class: 'charger-kw' }, fmtPower(c.power_w)),
        h('span', { class: 'sub' }, t('chargers.portsCharging', { n: charging, total: c.ports.length })))),
    h('div', { class: 'badges' }, badges),
    h('p', { class: 'sub facts' }, [...facts.filter(Boolean), seen].filter(Boolean).join(' · ') || t('common.unassigned'),
      c.kind === 'ev' && boot ? h('span', { class: 'visually-hidden' }, fmtTime(boot.booted_at)) : null),
    alarms.length ? h('ul', { class: 'charger-alarms', 'data-testid': 'charger-alarms' }, alarms.map((a) => {
      const n = alarmPort(a);
      return h('li', {
        class: `charger-alarm sev-${a.severity}`, 'data-testid': 'charger-alarm', 'data-alarm-id': a.id,
        'data-severity': a.severity, 'data-point': a.point || '', 'data-state': a.state,
      },
      h('span', { class: `sev sev-${a.severity}` }, tv('sev', a.severity)), ' ',
      h('a', { href: '#/alarms' }, a.message || a.rule || ''),
      h('span', { class: 'sub' }, [n != null ? portLabel(c, n) : null, tv('state', a.state), fmtShortTime(a.raised_at)].filter(Boolean).join(' · ')));
    })) : null,
    c.ports.length
      ? h('div', { class: `ports ports-${c.kind}` }, c.ports.map((p) => portTile(c, p, alarmPorts.has(p.port))))
      : h('p', { class: 'muted small' }, t('chargers.noPorts')),
    chargerActions(c),
    answer ? h('p', {
      class: `cmd-answer ${answer.ok ? 'ok' : 'bad'}`, 'data-testid': 'cmd-answer', 'data-status': answer.status,
      'data-http': answer.http || null, role: 'status',
    }, h('strong', null, commandLabel(c, answer.what, answer.n)), ' · ', outcomeText(answer),
    h('span', { class: 'sub' }, ` · ${fmtShortTime(answer.at)}`)) : null);
  }

  function stat(label, value, cls, testid) {
    return h('div', { class: `stat ${cls || ''}` },
      h('span', { class: 'stat-value', 'data-testid': testid }, value),
      h('span', { class: 'stat-label' }, label));
  }

  function renderSummary() {
    const all = [...chargers.values()];
    let online = 0;
    let charging = 0;
    let idle = 0;
    let faulted = 0;
    let ports = 0;
    let power = 0;
    for (const c of all) {
      if (isOnline(c)) online += 1;
      power += c.power_w || 0;
      for (const p of c.ports) {
        ports += 1;
        const k = portClass(p.status);
        if (k === 'charging') charging += 1;
        else if (k === 'free') idle += 1;
        else if (k === 'fault') faulted += 1;
      }
    }
    const today = dayOf(new Date());
    const todays = recent.filter((s) => dayOf(s.started_at) === today);
    const kwh = todays.reduce((n, s) => n + (typeof s.energy_kwh === 'number' ? s.energy_kwh : 0), 0);
    const more = todays.length >= SESSIONS_LIMIT * 2 ? '+' : '';
    summary.replaceChildren(
      h('div', { class: 'card' }, h('h2', null, t('chargers.sum.chargers')), h('div', { class: 'stats' },
        stat(t('status.online'), String(online), 'ok', 'sum-chargers-online'),
        stat(t('status.offline'), String(all.length - online), all.length - online ? 'bad' : 'dim', 'sum-chargers-offline'))),
      h('div', { class: 'card' }, h('h2', null, t('chargers.sum.ports', { n: ports })), h('div', { class: 'stats' },
        stat(t('cs.charging'), String(charging), 'charging', 'sum-ports-charging'),
        stat(t('cs.idle'), String(idle), '', 'sum-ports-idle'),
        stat(t('cs.faulted'), String(faulted), faulted ? 'bad' : 'dim', 'sum-ports-faulted'))),
      h('div', { class: 'card' }, h('h2', null, t('chargers.totalPower')), h('div', { class: 'big' },
        h('span', { class: 'big-value', 'data-testid': 'sum-power' }, fmtNum(power / 1000, 1)), h('span', { class: 'unit' }, 'kW'))),
      h('div', { class: 'card' }, h('h2', null, t('chargers.sum.today')), h('div', { class: 'big' },
        h('span', { class: 'big-value', 'data-testid': 'sum-sessions-today' }, sessionsLoaded ? `${todays.length}${more}` : t('common.none')),
        h('span', { class: 'unit' }, t('chargers.sum.times'))),
      h('p', { class: 'sub' }, sessionsLoaded ? fmtKwh(kwh) : '')),
    );
  }

  function render() {
    if (!active) return;
    title.textContent = t('chargers.title');
    updated.textContent = loadedAt ? t('common.updated', { t: fmtShortTime(loadedAt) }) : '';
    renderSummary();
    const list2 = sorted();
    empty.hidden = list2.length > 0;
    empty.textContent = loaded ? t('chargers.empty') : loadError ? loadError.message : t('common.loading');
    const focusKey = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.key : null;
    const els = list2.map((c) => {
      let el = cards.get(c.id);
      if (!el || dirty.has(c.id)) {
        const next = card(c);
        if (el && el.parentNode === list) el.replaceWith(next);
        el = next;
        cards.set(c.id, el);
      }
      return el;
    });
    dirty.clear();
    for (const id of [...cards.keys()]) if (!chargers.has(id)) { cards.get(id).remove(); cards.delete(id); }
    const same = els.length === list.children.length && els.every((el, i) => list.children[i] === el);
    if (!same) list.replaceChildren(...els);
    if (focusKey && document.activeElement === document.body) {
      const again = list.querySelector(`[data-key="${CSS.escape(focusKey)}"]`);
      if (again && !again.disabled) again.focus();
    }
    renderFilter();
  }

  function renderFilter() {
    const ev = sorted().filter((c) => c.kind === 'ev');
    const want = ['', ...ev.map((c) => c.id)];
    const have = [...filterSel.options].map((o) => o.value);
    if (want.join('\n') !== have.join('\n') || filterSel.dataset.lang !== t('sessions.allChargers')) {
      filterSel.replaceChildren(
        h('option', { value: '' }, t('sessions.allChargers')),
        ...ev.map((c) => h('option', { value: c.id }, c.name || c.id)));
      filterSel.dataset.lang = t('sessions.allChargers');
    }
    filterSel.value = filter;
  }

  function renderSessions() {
    if (!active) return;
    sessionsTitle.textContent = t('sessions.title');
    filterLabel.textContent = t('sessions.filter');
    sessionsNote.textContent = t('sessions.note');
    const cols = [
      ['device', t('sessions.col.device')], ['connector', t('sessions.col.connector')], ['tag', t('sessions.col.tag')],
      ['start', t('sessions.col.start')], ['stop', t('sessions.col.stop')], ['energy', t('sessions.col.energy'), 'num'],
      ['reason', t('sessions.col.reason')],
    ];
    head.replaceChildren(h('tr', null, cols.map(([k, label, cls]) => h('th', { class: [`col-${k}`, cls].filter(Boolean).join(' ') }, label))));
    const label = (k) => cols.find((c) => c[0] === k)[1];
    body.replaceChildren(...sessions.map((s) => {
      const running = !s.stopped_at;
      const c = chargers.get(s.device_id);
      return h('tr', {
        class: running ? 'running' : null, 'data-testid': 'session-row', 'data-transaction-id': s.transaction_id,
        'data-device-id': s.device_id, 'data-connector': s.connector, 'data-running': String(running),
      },
      h('td', { class: 'col-device', 'data-label': label('device') }, c ? c.name || c.id : deviceName(s.device_id)),
      h('td', { class: 'col-connector', 'data-label': label('connector') }, String(s.connector)),
      h('td', { class: 'col-tag mono', 'data-label': label('tag') }, s.id_tag),
      h('td', { class: 'col-start nowrap', 'data-label': label('start') }, fmtTime(s.started_at)),
      h('td', { class: 'col-stop nowrap', 'data-label': label('stop') },
        running ? h('span', { class: 'tag tag-charging' }, t('cs.charging')) : fmtTime(s.stopped_at)),
      h('td', { class: 'col-energy num', 'data-label': label('energy') }, typeof s.energy_kwh === 'number' ? fmtNum(s.energy_kwh, 2) : t('common.none')),
      h('td', { class: 'col-reason', 'data-label': label('reason'), 'data-reason': s.stop_reason || '' },
        running ? '' : s.stop_reason ? tv('sr', s.stop_reason) : t('sr.local')));
    }));
    table.hidden = !sessions.length;
    sessionsEmpty.hidden = sessions.length > 0;
    sessionsEmpty.textContent = sessionsLoaded ? t('sessions.empty') : t('common.loading');
  }

  return {
    enter() {
      active = true;
      for (const id of chargers.keys()) dirty.add(id);
      render();
      renderSessions();
      load();
      loadSessions();
      clearInterval(timer);
      clearInterval(sessionsTimer);
      timer = setInterval(load, REFRESH_MS);
      sessionsTimer = setInterval(loadSessions, SESSIONS_MS);
    },
    leave() {
      active = false;
      clearInterval(timer);
      clearInterval(sessionsTimer);
      clearTimeout(renderTimer);
      renderTimer = null;
    },
    onLang() {
      for (const id of chargers.keys()) dirty.add(id);
      filterSel.dataset.lang = '';
      render();
      renderSessions();
    },
  };
}
