// 能耗: consumption by device, building or tenant per hour, day or month (GET /energy), drawn
// with uPlot as grouped bars, with a table of totals and a CSV export link.
import { t } from '../i18n.js';
import { store, on, api, reportError, h, clear, fmtNum, fmtBucket } from '../core.js';

/** A device group reads as its name where the hub knows the device. */
function groupLabel(group, by) {
  if (!group) return t('common.unassigned');
  const d = by === 'device' ? store.devices.get(group) : null;
  return d && d.name && d.name !== group ? `${d.name} (${group})` : group;
}

const BY = ['building', 'device', 'tenant'];
const PERIOD = ['hour', 'day', 'month'];
const KIND = ['electricity', 'water'];
const PALETTE = ['#2563eb', '#f59e0b', '#10b981', '#8b5cf6', '#ef4444', '#0ea5e9', '#84cc16', '#ec4899', '#14b8a6', '#a16207', '#6366f1', '#64748b'];
const DEFAULT_WIDTH = { hour: 3600, day: 86400, month: 30 * 86400 };

/** The width of one bucket: the smallest gap between bucket starts. */
function bucketWidth(ts, period) {
  let w = Infinity;
  for (let i = 1; i < ts.length; i++) w = Math.min(w, ts[i] - ts[i - 1]);
  return isFinite(w) && w > 0 ? w : DEFAULT_WIDTH[period] || 86400;
}

/** Series k of n drawn as a bar inside [ts, ts + w): bars of one bucket stand side by side. */
function groupedBars(k, n, w) {
  const inner = 0.8 * w;
  const bw = inner / n;
  return window.uPlot.paths.bars({
    disp: {
      x0: { unit: 1, values: (u) => u.data[0].map((x) => x + 0.1 * w + k * bw) },
      size: { unit: 1, values: () => [bw] },
    },
  });
}

function part(ts, opts) {
  const o = {};
  try {
    for (const p of new Intl.DateTimeFormat('en-GB', { ...opts, timeZone: store.tz, hourCycle: 'h23' }).formatToParts(new Date(ts * 1000))) o[p.type] = p.value;
  } catch {
    for (const p of new Intl.DateTimeFormat('en-GB', { ...opts, hourCycle: 'h23' }).formatToParts(new Date(ts * 1000))) o[p.type] = p.value;
  }
  return o;
}

function axisLabel(ts, period) {
  const p = part(ts, { year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit' });
  if (period === 'month') return `${p.year}-${p.month}`;
  if (period === 'day') return `${p.month}-${p.day}`;
  return p.hour === '00' && p.minute === '00' ? `${p.month}-${p.day}` : `${p.hour}:${p.minute}`;
}

/** A colour square; the colour set through CSSOM, which a strict style-src CSP allows. */
function swatch(color) {
  const el = h('span', { class: 'swatch' });
  el.style.background = color;
  return el;
}

export function createEnergy(root) {
  let active = false;
  let data = null;
  let plot = null;
  let timer = null;
  let seq = 0;
  const sel = { by: 'building', period: 'day', kind: 'electricity' };

  function select(name, values) {
    const id = `energy-${name}`;
    const label = h('label', { for: id });
    const el = h('select', { id, 'data-testid': id, onchange: () => { sel[name] = el.value; syncHash(); load(); } },
      values.map((v) => h('option', { value: v })));
    return { label, el, values, name, wrap: h('div', { class: 'field' }, label, el) };
  }
  const selects = [select('by', BY), select('period', PERIOD), select('kind', KIND)];

  const title = h('h1');
  const refreshBtn = h('button', { type: 'button', class: 'secondary', 'data-testid': 'energy-refresh', onclick: () => load() });
  const csv = h('a', { class: 'button secondary', 'data-testid': 'energy-csv', download: 'energy.csv', href: '#' });
  const chart = h('div', { class: 'chart', 'data-testid': 'energy-chart' });
  const noData = h('p', { class: 'chart-empty', hidden: true });
  const totalsTitle = h('h2');
  const totalsHead = h('thead');
  const totalsBody = h('tbody');
  const totalsFoot = h('tfoot');
  root.append(
    h('div', { class: 'page-head' }, h('div', { class: 'title-row' }, title)),
    h('div', { class: 'toolbar' }, selects.map((s) => s.wrap), h('div', { class: 'toolbar-actions' }, refreshBtn, csv)),
    h('div', { class: 'chart-box' }, chart, noData),
    totalsTitle,
    h('div', { class: 'table-wrap' }, h('table', { class: 'grid totals', 'data-testid': 'energy-totals' }, totalsHead, totalsBody, totalsFoot)),
  );

  function query(extra) {
    const q = new URLSearchParams({ by: sel.by, period: sel.period, kind: sel.kind, ...extra });
    return q.toString();
  }

  function syncHash() {
    const want = `#/energy?${new URLSearchParams(sel)}`;
    if (location.hash !== want) history.replaceState(null, '', want);
    csv.href = `/api/v1/energy?${query({ format: 'csv' })}`;
    csv.setAttribute('download', `parkhub-energy-${sel.kind}-${sel.by}-${sel.period}.csv`);
  }

  function renderStatic() {
    title.textContent = t('energy.title');
    for (const s of selects) {
      s.label.textContent = t(`energy.${s.name}`);
      for (const o of s.el.options) o.textContent = t(`energy.${s.name}.${o.value}`);
      s.el.value = sel[s.name];
    }
    refreshBtn.textContent = t('common.refresh');
    csv.textContent = t('energy.csv');
    noData.textContent = t('energy.noData');
    totalsTitle.textContent = t('energy.totals');
  }

  async function load() {
    const s = ++seq;
    try {
      const d = await api(`/energy?${query()}`);
      if (s !== seq) return;
      data = d;
      draw();
    } catch (e) {
      if (s === seq) reportError(e);
    }
  }

  function chartHeight() {
    return window.innerWidth <= 640 ? 240 : window.innerWidth >= 1600 ? 420 : 320;
  }

  function draw() {
    if (!active || !data) return;
    if (plot) { plot.destroy(); plot = null; }
    const uPlot = window.uPlot;
    const period = data.period || sel.period;
    const unit = data.unit || (sel.kind === 'water' ? 'm³' : 'kWh');
    const ts = Array.isArray(data.ts) ? data.ts : [];
    const series = Array.isArray(data.series) ? data.series : [];
    const w = bucketWidth(ts, period);
    let max = 0;
    let values = 0;
    for (const s of series) {
      for (const v of s.values || []) if (v != null) { values += 1; if (v > max) max = v; }
    }
    chart.dataset.series = String(series.length);
    chart.dataset.values = String(values);
    noData.hidden = values > 0;
    renderTotals(series, unit);
    if (!uPlot) return;

    const now = Math.floor(Date.now() / 1000);
    const x0 = ts.length ? ts[0] : now - 86400;
    const x1 = ts.length ? ts[ts.length - 1] + w : now;
    const opts = {
      width: Math.max(280, chart.clientWidth || 600),
      height: chartHeight(),
      tzDate: (v) => (store.tz ? uPlot.tzDate(new Date(v * 1000), store.tz) : new Date(v * 1000)),
      cursor: { drag: { x: false, y: false }, points: { show: false } },
      scales: {
        x: { time: true, range: () => [x0, x1] },
        y: { range: () => [0, max > 0 ? max * 1.1 : 1] },
      },
      axes: [
        { values: (u, splits) => splits.map((v) => (v == null ? '' : axisLabel(v, period))), grid: { show: false } },
        { label: unit, size: 64, values: (u, splits) => splits.map((v) => fmtNum(v, 2)) },
      ],
      series: [
        { label: t('energy.time'), value: (u, v) => (v == null ? '—' : fmtBucket(v, period)) },
        ...series.map((s, k) => {
          const color = PALETTE[k % PALETTE.length];
          return {
            label: groupLabel(s.group, data.by),
            stroke: color,
            fill: color + 'cc',
            width: 1,
            paths: groupedBars(k, series.length, w),
            points: { show: false },
            value: (u, v) => (v == null ? '—' : `${fmtNum(v, 2)} ${unit}`),
          };
        }),
      ],
    };
    const aligned = [ts, ...series.map((s) => ts.map((_, i) => (s.values && s.values[i] != null ? s.values[i] : null)))];
    plot = new uPlot(opts, aligned, chart);
  }

  function renderTotals(series, unit) {
    clear(totalsHead).append(h('tr', null,
      h('th', { scope: 'col' }, t('energy.col.group')),
      h('th', { scope: 'col', class: 'num' }, `${t('energy.col.total')} (${unit})`),
      h('th', { scope: 'col', class: 'num' }, t('energy.col.share'))));
    const sum = series.reduce((n, s) => n + (typeof s.total === 'number' ? s.total : 0), 0);
    const sorted = series.map((s, k) => ({ ...s, k })).sort((a, b) => (b.total ?? 0) - (a.total ?? 0));
    clear(totalsBody).append(...sorted.map((s) => h('tr', { 'data-group': s.group },
      h('td', null, swatch(PALETTE[s.k % PALETTE.length]), ' ', groupLabel(s.group, data && data.by)),
      h('td', { class: 'num' }, fmtNum(s.total, 2)),
      h('td', { class: 'num' }, sum > 0 && typeof s.total === 'number' ? `${fmtNum((s.total / sum) * 100, 1)}%` : t('common.none')))));
    if (!series.length) totalsBody.append(h('tr', null, h('td', { colspan: '3', class: 'muted' }, t('energy.noData'))));
    clear(totalsFoot).append(h('tr', null,
      h('th', { scope: 'row' }, t('common.total')),
      h('td', { class: 'num' }, fmtNum(sum, 2)),
      h('td', null, '')));
  }

  const ro = typeof ResizeObserver === 'function' ? new ResizeObserver(() => {
    if (plot && chart.clientWidth) plot.setSize({ width: Math.max(280, chart.clientWidth), height: chartHeight() });
  }) : null;
  if (ro) ro.observe(chart);

  on('resync', ({ initial }) => { if (active && !initial) load(); });

  return {
    enter(params) {
      active = true;
      for (const s of selects) {
        const v = params.get(s.name);
        if (v && s.values.includes(v)) sel[s.name] = v;
      }
      renderStatic();
      syncHash();
      if (data) draw();
      load();
      clearInterval(timer);
      timer = setInterval(load, 60000);
    },
    leave() {
      active = false;
      clearInterval(timer);
    },
    onLang() { renderStatic(); draw(); },
  };
}
