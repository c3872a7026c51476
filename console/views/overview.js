// 总览: alarms by category, device counts, today's use and the park layout (GET /overview).
import { t, tv } from '../i18n.js';
import { on, api, reportError, h, clear, fmtNum, fmtShortTime, fmtTime, statusOf, CATEGORIES, SEVERITIES } from '../core.js';

/** Floors in building order: basements (B2, B1), then 1F, 2F…, then roof and the rest. */
function floorKey(f) {
  const s = String(f || '').toUpperCase();
  let m = /^B(\d+)/.exec(s);
  if (m) return [0, -Number(m[1]), s];
  m = /^(\d+)/.exec(s) || /^F(\d+)/.exec(s);
  if (m) return [1, Number(m[1]), s];
  if (!s) return [3, 0, s];
  return [2, 0, s];
}

function byFloor(a, b) {
  const ka = floorKey(a.floor);
  const kb = floorKey(b.floor);
  return ka[0] - kb[0] || ka[1] - kb[1] || ka[2].localeCompare(kb[2]);
}

export function createOverview(root) {
  let active = false;
  let data = null;
  let timer = null;
  let debounce = null;
  let seq = 0;

  const title = h('h1');
  const updated = h('span', { class: 'muted small' });
  const cards = h('div', { class: 'cards' });
  const layoutTitle = h('h2');
  const legend = h('div', { class: 'legend' });
  const layout = h('div', { class: 'layout', 'data-testid': 'overview-layout' });
  root.append(
    h('div', { class: 'page-head' }, h('div', { class: 'title-row' }, title, updated)),
    cards,
    h('div', { class: 'section-head' }, layoutTitle, legend),
    layout,
  );

  async function load() {
    const s = ++seq;
    try {
      const d = await api('/overview');
      if (s !== seq) return;
      data = d;
      render();
    } catch (e) {
      reportError(e);
    }
  }

  function soon() {
    if (!active) return;
    clearTimeout(debounce);
    debounce = setTimeout(load, 1200);
  }

  function stat(label, value, cls, testid) {
    return h('div', { class: `stat ${cls || ''}` },
      h('span', { class: 'stat-value', 'data-testid': testid }, value),
      h('span', { class: 'stat-label' }, label));
  }

  function renderCards() {
    const a = data.alarms || {};
    const dv = data.devices || {};
    const today = data.today || {};
    const byCat = a.by_category || {};
    const bySev = a.by_severity || {};
    const cats = CATEGORIES.filter((c) => byCat[c]).concat(Object.keys(byCat).filter((c) => !CATEGORIES.includes(c) && byCat[c]));

    const alarmCard = h('a', { class: `card card-alarms${a.active ? ' has-alarms' : ''}`, href: '#/alarms', 'data-testid': 'overview-alarms' },
      h('h2', null, t('overview.alarms')),
      h('div', { class: 'big' },
        h('span', { class: 'big-value', 'data-testid': 'overview-alarms-active' }, String(a.active ?? 0)),
        a.unacked ? h('span', { class: 'pill pill-red' }, t('overview.unacked', { n: a.unacked })) : null),
      cats.length
        ? h('ul', { class: 'chips' }, cats.map((c) => h('li', { class: `chip cat-${c}`, 'data-category': c },
          h('span', null, tv('cat', c)), h('strong', null, String(byCat[c])))))
        : h('p', { class: 'muted' }, t('overview.noAlarms')),
      SEVERITIES.some((s) => bySev[s])
        ? h('ul', { class: 'chips sev-chips' }, SEVERITIES.filter((s) => bySev[s]).map((s) =>
          h('li', { class: `chip chip-sev sev-${s}` }, h('span', null, tv('sev', s)), h('strong', null, String(bySev[s])))))
        : null,
    );

    const devCard = h('a', { class: 'card', href: '#/devices', 'data-testid': 'overview-devices' },
      h('h2', null, t('overview.devices')),
      h('div', { class: 'stats' },
        stat(t('overview.online'), String(dv.online ?? 0), 'ok', 'overview-devices-online'),
        stat(t('overview.offline'), String(dv.offline ?? 0), dv.offline ? 'bad' : '', 'overview-devices-offline'),
        stat(t('overview.unknown'), String(dv.unknown ?? 0), 'dim', 'overview-devices-unknown')),
      h('p', { class: 'muted small' }, t('overview.total', { n: dv.total ?? 0 })),
    );

    const since = today.since ? t('overview.since', { t: fmtShortTime(today.since).slice(0, 11) }) : '';
    const elecCard = h('a', { class: 'card', href: '#/energy?kind=electricity' },
      h('h2', null, t('overview.electricity')),
      h('div', { class: 'big' },
        h('span', { class: 'big-value', 'data-testid': 'overview-today-electricity' }, fmtNum(today.electricity_kwh, 1)),
        h('span', { class: 'unit' }, 'kWh')),
      h('p', { class: 'muted small' }, since));
    const waterCard = h('a', { class: 'card', href: '#/energy?kind=water' },
      h('h2', null, t('overview.water')),
      h('div', { class: 'big' },
        h('span', { class: 'big-value', 'data-testid': 'overview-today-water' }, fmtNum(today.water_m3, 2)),
        h('span', { class: 'unit' }, 'm³')),
      h('p', { class: 'muted small' }, since));
    clear(cards).append(alarmCard, devCard, elecCard, waterCard);
  }

  function tile(d) {
    const status = statusOf(d.online);
    const cls = d.alarm ? `alarm sev-${d.alarm}` : status;
    const label = [d.name || d.id, d.id, tv('status', status), d.alarm ? tv('sev', d.alarm) : null].filter(Boolean).join(' · ');
    return h('a', {
      class: `tile ${cls}`, href: `#/devices?q=${encodeURIComponent(d.id)}`, title: label, 'aria-label': label,
      'data-testid': 'overview-tile', 'data-device-id': d.id, 'data-status': status, 'data-alarm': d.alarm || '',
    },
    h('span', { class: 'tile-name' }, d.name || d.id),
    h('span', { class: 'tile-sub' }, d.alarm ? tv('sev', d.alarm) : tv('dcat', d.category)));
  }

  function renderLayout() {
    clear(legend).append(
      ...[['alarm sev-critical', 'overview.legend.alarm'], ['online', 'overview.legend.online'],
        ['offline', 'overview.legend.offline'], ['unknown', 'overview.legend.unknown']]
        .map(([c, k]) => h('span', { class: 'legend-item' }, h('span', { class: `swatch ${c}` }), t(k))));
    const buildings = (data.layout || []).slice();
    clear(layout);
    if (!buildings.length) { layout.append(h('p', { class: 'empty' }, t('overview.noLayout'))); return; }
    buildings.sort((a, b) => (!a.building) - (!b.building) || String(a.building).localeCompare(String(b.building), 'zh-CN', { numeric: true }));
    for (const b of buildings) {
      const floors = (b.floors || []).slice().sort(byFloor);
      const alarmCount = floors.reduce((n, f) => n + (f.devices || []).filter((d) => d.alarm).length, 0);
      layout.append(h('section', { class: `building${alarmCount ? ' has-alarm' : ''}`, 'data-building': b.building },
        h('h3', null, b.building || t('common.unassigned')),
        floors.map((f) => h('div', { class: 'floor' },
          h('div', { class: 'floor-label' }, f.floor || '—'),
          h('div', { class: 'tiles' }, (f.devices || []).map(tile)))),
      ));
    }
  }

  function render() {
    title.textContent = t('overview.title');
    layoutTitle.textContent = t('overview.layout');
    if (!data) { clear(cards).append(h('p', { class: 'muted' }, t('common.loading'))); return; }
    updated.textContent = t('common.updated', { t: fmtTime(new Date().toISOString()).slice(11) });
    renderCards();
    renderLayout();
  }

  on('alarm', soon);
  on('device', soon);
  on('resync', () => { if (active) load(); });

  return {
    enter() {
      active = true;
      render();
      load();
      clearInterval(timer);
      timer = setInterval(load, 30000);
    },
    leave() {
      active = false;
      clearInterval(timer);
      clearTimeout(debounce);
    },
    onLang() { render(); },
  };
}
