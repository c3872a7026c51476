// 告警: the live alarm table, acknowledge and shelve dialogs, and the detail drawer.
import { t, tv } from '../i18n.js';
import {
  store, on, api, reportError, h, clear, $, fmtTime, fmtValue, deviceName, sevRank, canOperate,
} from '../core.js';

const STATE_ORDER = { unacked: 0, rtn_unacked: 1, acked: 2, normal: 3 };

function compare(a, b) {
  return (STATE_ORDER[a.state] ?? 9) - (STATE_ORDER[b.state] ?? 9)
    || sevRank(a.severity) - sevRank(b.severity)
    || String(b.raised_at || '').localeCompare(String(a.raised_at || ''))
    || (b.id > a.id ? 1 : -1);
}

function needsAck(a) {
  return a.state === 'unacked' || a.state === 'rtn_unacked';
}

export function createAlarms(root, ctx) {
  const rows = new Map();    // id → { tr, sig }
  let active = false;
  let detailId = null;
  let detailSeq = 0;

  // ---- skeleton ----
  const modeActive = h('button', { type: 'button', class: 'seg', 'data-testid': 'alarms-mode-active', 'aria-pressed': 'true', onclick: () => setMode('active') });
  const modeAll = h('button', { type: 'button', class: 'seg', 'data-testid': 'alarms-mode-all', 'aria-pressed': 'false', onclick: () => setMode('all') });
  const modeGroup = h('div', { class: 'segmented', role: 'group' }, modeActive, modeAll);
  const title = h('h1');
  const count = h('span', { class: 'count' });
  const hint = h('p', { class: 'muted viewer-hint' });
  const head = h('thead');
  const body = h('tbody', { 'data-testid': 'alarm-table-body' });
  const table = h('table', { class: 'grid cards-on-phone alarms-table', 'data-testid': 'alarm-table' }, head, body);
  const empty = h('p', { class: 'empty', hidden: true });
  root.append(
    h('div', { class: 'page-head' }, h('div', { class: 'title-row' }, title, count), modeGroup),
    hint,
    h('div', { class: 'table-wrap' }, table),
    empty,
  );

  function renderStatic() {
    title.textContent = t('alarms.title');
    modeActive.textContent = t('alarms.active');
    modeAll.textContent = t('alarms.all');
    modeGroup.setAttribute('aria-label', t('alarms.modeLabel'));
    hint.textContent = t('alarms.viewerHint');
    hint.hidden = canOperate();
    clear(head).append(h('tr', null,
      ['severity', 'state', 'category', 'device', 'message', 'raised', 'acked', 'actions']
        .map((c) => h('th', { scope: 'col', class: `col-${c}` }, t(`alarms.col.${c}`))),
    ));
  }

  function setMode(mode) {
    if (store.alarmMode === mode) return;
    store.alarmMode = mode;
    modeActive.setAttribute('aria-pressed', String(mode === 'active'));
    modeAll.setAttribute('aria-pressed', String(mode === 'all'));
    if (mode === 'active') {
      for (const [id, a] of store.alarms) if (a.state === 'normal') store.alarms.delete(id);
      render();
    }
    ctx.loadAlarms();
  }

  // ---- rows ----
  function actionButtons(a, inDetail) {
    if (!canOperate()) return [];
    const out = [];
    if (needsAck(a)) {
      out.push(h('button', {
        type: 'button', class: 'small primary', 'data-testid': inDetail ? 'detail-ack-button' : 'ack-button',
        onclick: (e) => { e.stopPropagation(); openAck(a.id); },
      }, t('alarms.ack')));
    }
    if (a.state !== 'normal' && !a.suppressed) {
      out.push(h('button', {
        type: 'button', class: 'small secondary', 'data-testid': inDetail ? 'detail-shelve-button' : 'shelve-button',
        onclick: (e) => { e.stopPropagation(); openShelve(a.id); },
      }, t('alarms.shelve')));
    }
    return out;
  }

  function flags(a) {
    return [
      a.suppressed ? h('span', { class: 'tag tag-muted' }, t('alarms.suppressed')) : null,
      a.escalated ? h('span', { class: 'tag tag-warn' }, t('alarms.escalated')) : null,
    ];
  }

  function fillRow(tr, a) {
    tr.className = `alarm sev-${a.severity} state-${a.state}${a.id === detailId ? ' selected' : ''}`;
    tr.dataset.alarmId = String(a.id);
    tr.dataset.deviceId = a.device_id || '';
    tr.dataset.state = a.state;
    tr.dataset.severity = a.severity;
    const dev = deviceName(a.device_id);
    clear(tr).append(
      h('td', { class: 'col-severity', 'data-label': t('alarms.col.severity') },
        h('span', { class: `sev sev-${a.severity}` }, tv('sev', a.severity))),
      h('td', { class: 'col-state', 'data-label': t('alarms.col.state') },
        h('span', { class: `state state-${a.state}` }, tv('state', a.state)), ...flags(a)),
      h('td', { class: 'col-category', 'data-label': t('alarms.col.category') }, tv('cat', a.category)),
      h('td', { class: 'col-device', 'data-label': t('alarms.col.device') },
        h('div', null, dev), dev !== a.device_id ? h('div', { class: 'sub mono' }, a.device_id) : null),
      h('td', { class: 'col-message', 'data-label': t('alarms.col.message') }, a.message || a.point || ''),
      h('td', { class: 'col-raised nowrap', 'data-label': t('alarms.col.raised') }, fmtTime(a.raised_at)),
      h('td', { class: 'col-acked', 'data-label': t('alarms.col.acked') },
        a.acked_by ? h('div', null, a.acked_by) : t('common.none'),
        a.acked_at ? h('div', { class: 'sub nowrap' }, fmtTime(a.acked_at)) : null),
      h('td', { class: 'col-actions', 'data-label': t('alarms.col.actions') },
        h('div', { class: 'actions' }, actionButtons(a, false))),
    );
  }

  function signature(a) {
    return JSON.stringify([a.state, a.severity, a.suppressed, a.escalated, a.acked_by, a.acked_at, a.message,
      a.raised_at, a.device_id, deviceName(a.device_id), a.id === detailId]);
  }

  function visibleAlarms() {
    const list = [];
    for (const a of store.alarms.values()) {
      if (store.alarmMode === 'active' && a.state === 'normal') continue;
      list.push(a);
    }
    return list.sort(compare);
  }

  function render(force) {
    if (!active) return;
    const list = visibleAlarms();
    const keep = new Set();
    let prev = null;
    for (const a of list) {
      keep.add(a.id);
      let row = rows.get(a.id);
      if (!row) {
        const tr = h('tr', {
          'data-testid': 'alarm-row', tabindex: '0',
          onclick: () => openDetail(a.id),
          onkeydown: (e) => { if (e.key === 'Enter' && e.target === tr) { e.preventDefault(); openDetail(a.id); } },
        });
        row = { tr, sig: null };
        rows.set(a.id, row);
      }
      const sig = signature(a);
      if (force || sig !== row.sig) { fillRow(row.tr, a); row.sig = sig; }
      // Keep the DOM order without moving rows that are already in place.
      const want = prev ? prev.nextSibling : body.firstChild;
      if (want !== row.tr) body.insertBefore(row.tr, want);
      prev = row.tr;
    }
    for (const [id, row] of rows) {
      if (!keep.has(id)) { row.tr.remove(); rows.delete(id); }
    }
    count.textContent = t('alarms.count', { n: list.length });
    empty.textContent = store.alarmMode === 'active' ? t('alarms.empty') : t('alarms.emptyAll');
    empty.hidden = list.length > 0;
    table.hidden = list.length === 0;
  }

  // ---- acknowledge / shelve ----
  const ackDialog = $('#ack-dialog');
  const shelveDialog = $('#shelve-dialog');
  let ackId = null;
  let shelveId = null;

  function subject(id) {
    const a = store.alarms.get(id) || {};
    return `${tv('sev', a.severity)} · ${deviceName(a.device_id)} · ${a.message || ''}`;
  }

  function openAck(id) {
    ackId = id;
    $('#ack-subject').textContent = subject(id);
    $('#ack-comment').value = '';
    $('#ack-error').hidden = true;
    $('#ack-confirm').disabled = false;
    ackDialog.showModal();
    $('#ack-comment').focus();
  }

  function openShelve(id) {
    shelveId = id;
    $('#shelve-subject').textContent = subject(id);
    $('#shelve-minutes').value = '30';
    $('#shelve-reason').value = '';
    $('#shelve-error').hidden = true;
    $('#shelve-confirm').disabled = false;
    shelveDialog.showModal();
    $('#shelve-reason').focus();
  }

  function applyResult(a) {
    if (!a || a.id == null) return;
    const prev = store.alarms.get(a.id);
    const merged = prev ? { ...prev, ...a } : a;
    if (store.alarmMode === 'active' && merged.state === 'normal') store.alarms.delete(a.id);
    else store.alarms.set(a.id, merged);
    // The same path as a live event, so the banner and badge follow.
    ctx.alarmChanged(merged);
  }

  async function submitAck(e) {
    e.preventDefault();
    const btn = $('#ack-confirm');
    const err = $('#ack-error');
    btn.disabled = true;
    err.hidden = true;
    try {
      const a = await api(`/alarms/${encodeURIComponent(ackId)}/ack`, {
        method: 'POST', body: { comment: $('#ack-comment').value.trim() },
      });
      ackDialog.close();
      applyResult(a);
    } catch (ex) {
      if (ex.status === 401) { ackDialog.close(); return; }
      err.textContent = ex.status === 403 ? t('err.forbidden', { msg: ex.message }) : ex.message;
      err.hidden = false;
      btn.disabled = false;
    }
  }

  async function submitShelve(e) {
    e.preventDefault();
    const btn = $('#shelve-confirm');
    const err = $('#shelve-error');
    const minutes = Number($('#shelve-minutes').value);
    const reason = $('#shelve-reason').value.trim();
    err.hidden = true;
    if (!Number.isInteger(minutes) || minutes < 1 || minutes > 10080) {
      err.textContent = t('shelve.minutesInvalid');
      err.hidden = false;
      $('#shelve-minutes').focus();
      return;
    }
    if (!reason) {
      err.textContent = t('shelve.reasonRequired');
      err.hidden = false;
      $('#shelve-reason').focus();
      return;
    }
    btn.disabled = true;
    try {
      const a = await api(`/alarms/${encodeURIComponent(shelveId)}/shelve`, {
        method: 'POST', body: { minutes, reason },
      });
      shelveDialog.close();
      applyResult(a);
    } catch (ex) {
      if (ex.status === 401) { shelveDialog.close(); return; }
      err.textContent = ex.status === 403 ? t('err.forbidden', { msg: ex.message }) : ex.message;
      err.hidden = false;
      btn.disabled = false;
    }
  }

  $('#ack-form').addEventListener('submit', submitAck);
  $('#shelve-form').addEventListener('submit', submitShelve);
  for (const d of [ackDialog, shelveDialog]) {
    for (const b of d.querySelectorAll('[data-close]')) b.addEventListener('click', () => d.close());
  }

  // ---- detail drawer ----
  const drawer = $('#alarm-detail');
  const detailBody = $('#detail-body');
  let detailData = null;

  function openDetail(id) {
    detailId = id;
    detailData = null;
    drawer.hidden = false;
    drawer.dataset.alarmId = String(id);
    renderDetail();
    render(false);
    loadDetail();
    $('#detail-close').focus({ preventScroll: true });
  }

  async function loadDetail() {
    const id = detailId;
    if (id == null) return;
    const seq = ++detailSeq;
    try {
      const d = await api(`/alarms/${encodeURIComponent(id)}`);
      if (seq !== detailSeq || id !== detailId) return;
      detailData = d;
      renderDetail();
    } catch (e) {
      if (seq === detailSeq) reportError(e);
    }
  }

  function field(label, value) {
    return [h('dt', null, label), h('dd', null, value == null || value === '' ? t('common.none') : value)];
  }

  function renderDetail() {
    if (detailId == null || drawer.hidden) return;
    const a = { ...(store.alarms.get(detailId) || {}), ...(detailData || {}) };
    if (a.id == null) { clear(detailBody).append(h('p', { class: 'muted' }, t('common.loading'))); return; }
    const events = Array.isArray(a.events) ? a.events : null;
    const deliveries = Array.isArray(a.deliveries) ? a.deliveries : null;
    const dev = deviceName(a.device_id);
    clear(detailBody).append(
      h('div', { class: 'detail-head' },
        h('span', { class: `sev sev-${a.severity}` }, tv('sev', a.severity)),
        h('span', { class: `state state-${a.state}`, 'data-testid': 'detail-state' }, tv('state', a.state)),
        h('span', { class: 'tag' }, tv('cat', a.category)),
        ...flags(a)),
      h('p', { class: 'detail-message' }, a.message || ''),
      h('div', { class: 'actions' }, actionButtons(a, true)),
      h('dl', { class: 'fields' },
        field(t('detail.device'), dev === a.device_id ? a.device_id : `${dev} (${a.device_id})`),
        field(t('detail.point'), a.point),
        field(t('detail.value'), a.value === undefined ? null : fmtValue(a.value)),
        field(t('detail.rule'), a.rule),
        field(t('detail.scope'), a.scope),
        field(t('detail.raised'), fmtTime(a.raised_at)),
        field(t('detail.acked'), a.acked_by ? `${a.acked_by} · ${fmtTime(a.acked_at)}` : null),
        field(t('detail.cleared'), a.cleared_at ? fmtTime(a.cleared_at) : null),
        field(t('detail.closed'), a.closed_at ? fmtTime(a.closed_at) : null),
      ),
      h('h3', null, t('detail.events')),
      events == null ? h('p', { class: 'muted' }, t('common.loading'))
        : events.length === 0 ? h('p', { class: 'muted' }, t('detail.noEvents'))
          : h('ol', { class: 'timeline', 'data-testid': 'alarm-events' }, events.map((ev) =>
            h('li', { 'data-event': ev.event },
              h('div', { class: 'tl-head' },
                h('strong', null, tv('ev', ev.event)),
                h('span', { class: 'sub nowrap' }, fmtTime(ev.ts)),
                ev.who ? h('span', { class: 'sub' }, ev.who) : null),
              ev.comment ? h('div', { class: 'tl-comment' }, ev.comment) : null))),
      h('h3', null, t('detail.deliveries')),
      deliveries == null ? h('p', { class: 'muted' }, t('common.loading'))
        : deliveries.length === 0 ? h('p', { class: 'muted' }, t('detail.noDeliveries'))
          : h('div', { class: 'table-wrap' }, h('table', { class: 'grid compact', 'data-testid': 'alarm-deliveries' },
            h('thead', null, h('tr', null, ['channel', 'department', 'event', 'state', 'attempts', 'delivered', 'error']
              .map((c) => h('th', { scope: 'col' }, t(c === 'event' ? 'detail.col.event' : `detail.col.${c}`))))),
            h('tbody', null, deliveries.map((d) => h('tr', { class: `delivery-${d.state}` },
              h('td', null, d.channel || ''),
              h('td', null, d.department || ''),
              h('td', null, tv('ev', d.event)),
              h('td', null, h('span', { class: `dstate dstate-${d.state}` }, tv('dstate', d.state))),
              h('td', { class: 'num' }, d.attempts ?? ''),
              h('td', { class: 'nowrap' }, d.delivered_at ? fmtTime(d.delivered_at) : t('common.none')),
              h('td', { class: 'err' }, d.last_error || ''))))),
          ),
    );
  }

  on('detail-closed', () => {
    const row = rows.get(detailId);
    if (active && row && row.tr.isConnected) row.tr.focus({ preventScroll: true });   // back where the reader was
    detailId = null;
    detailData = null;
    detailSeq += 1;
    render(false);
  });

  // ---- live ----
  let detailReload = null;
  on('alarm', ({ alarm }) => {
    render(false);
    if (detailId != null && alarm.id === detailId) {
      renderDetail();
      clearTimeout(detailReload);
      detailReload = setTimeout(loadDetail, 400);   // fetch the new transition and deliveries
    }
  });
  on('alarms', () => { render(false); renderDetail(); });
  on('devices', () => render(false));
  on('session', () => { renderStatic(); for (const row of rows.values()) row.sig = null; });

  return {
    enter() {
      active = true;
      renderStatic();
      render(true);
    },
    leave() {
      active = false;
      ctx.closeDetail();
    },
    onLang() {
      renderStatic();
      render(true);
      renderDetail();
    },
  };
}
