// Overview: contacts received, duplicates and tiers over time (GET /stats),
// deliveries by status, rule errors by rule, and the reload status with the
// last error (GET /rules), and rescoring: the running job, the last one,
// "Rescore now" (GET/POST /rescore).

import { api, ApiError } from './api.js';
import { h, clear, field, short, when } from './dom.js';
import { activityChart } from './charts.js';
import { rescorePanel } from './rescore.js';

const RANGES = {
  '24h': { since: '24h', bucket: '1h', label: 'Last 24 hours' },
  '7d': { since: '7d', bucket: '6h', label: 'Last 7 days' },
  '30d': { since: '30d', bucket: '1d', label: 'Last 30 days' },
};

export function overviewPage(ctx) {
  let destroyChart = null;
  const rescore = rescorePanel();
  let range = RANGES[ctx.params.get('range')] ? ctx.params.get('range') : '24h';
  const select = h(
    'select',
    { onchange: () => { range = select.value; ctx.setParam('range', range); load(); } },
    Object.entries(RANGES).map(([key, r]) => h('option', { value: key, selected: key === range }, r.label)),
  );
  const body = h('div', { class: 'overview-body', 'aria-live': 'polite' }, h('p', { class: 'hint' }, 'Loading…'));
  const el = h(
    'section',
    { class: 'page overview', 'aria-labelledby': 'ov-title' },
    h('h1', { id: 'ov-title' }, 'Overview'),
    h('div', { class: 'toolbar' }, field('Period', select), h('button', { type: 'button', class: 'secondary', onclick: () => refresh() }, 'Refresh')),
    body,
  );

  async function load() {
    const r = RANGES[range];
    const [stats, rules] = await Promise.allSettled([
      api('GET', `/stats?since=${r.since}&bucket=${r.bucket}`),
      api('GET', '/rules'),
    ]);
    if ([stats, rules].some((p) => p.status === 'rejected' && p.reason instanceof ApiError && p.reason.status === 401)) return;
    destroyChart?.();
    destroyChart = null;
    const chartBox = h('div', { class: 'chart' });
    const s = stats.status === 'fulfilled' ? stats.value : null;
    const buckets = s?.buckets ?? [];
    const total = (k) => buckets.reduce((a, b) => a + (b[k] ?? 0), 0);
    const tiers = {};
    for (const b of buckets) for (const [t, n] of Object.entries(b.tiers ?? {})) tiers[t] = (tiers[t] ?? 0) + n;
    clear(
      body,
      h('h2', {}, 'Rules'),
      rulesStatus(rules),
      h('h2', {}, 'Rescoring'),
      rescore.el,
      h('h2', {}, 'Contacts'),
      s
        ? [
            h(
              'dl',
              { class: 'stats-cards' },
              card('Received', total('received'), 'received'),
              card('Duplicates', total('duplicates'), 'duplicates'),
              Object.entries(tiers).map(([t, n]) => card(`Tier ${t}`, n, `tier-${t}`)),
            ),
            buckets.length ? chartBox : h('p', { class: 'hint' }, 'Nothing received in this period.'),
          ]
        : h('p', { class: 'error-text' }, `Statistics are unavailable: ${stats.reason?.message}`),
      h('h2', {}, 'Deliveries'),
      s?.deliveries
        ? h(
            'dl',
            { class: 'stats-cards' },
            ['pending', 'dead', 'delivered'].map((k) =>
              h('div', { class: `card ${k === 'dead' && s.deliveries.dead ? 'alert' : ''}` }, h('dt', {}, h('a', { href: `#/deliveries?status=${k}` }, k)), h('dd', { dataset: { field: `deliveries-${k}` } }, String(s.deliveries[k] ?? 0))),
            ),
          )
        : h('p', { class: 'hint' }, '—'),
      h('h2', {}, 'Rule errors by rule'),
      ruleErrors(s?.rule_errors),
    );
    if (buckets.length) destroyChart = activityChart(chartBox, buckets);
  }

  function refresh() {
    rescore.refresh();
    return load();
  }

  load();
  return {
    el,
    destroy() {
      destroyChart?.();
      rescore.destroy();
    },
  };
}

function card(label, value, key) {
  return h('div', { class: 'card' }, h('dt', {}, label), h('dd', { dataset: { field: key } }, String(value ?? 0)));
}

function rulesStatus(result) {
  if (result.status === 'rejected') return h('p', { class: 'error-text' }, `The rules status is unavailable: ${result.reason?.message}`);
  const r = result.value;
  const e = r.last_error;
  return h(
    'div',
    { class: 'rules-status' },
    h(
      'dl',
      { class: 'stats-cards' },
      h('div', { class: 'card' }, h('dt', {}, 'Rules version'), h('dd', { title: r.rules_version, class: 'mono small-value' }, short(r.rules_version))),
      h('div', { class: 'card' }, h('dt', {}, 'Loaded at'), h('dd', { class: 'small-value' }, when(r.loaded_at))),
      h('div', { class: 'card' }, h('dt', {}, 'Rule files'), h('dd', {}, String(r.files?.length ?? 0))),
      h('div', { class: `card ${e ? 'alert' : 'good'}` }, h('dt', {}, 'Last reload'), h('dd', { 'data-field': 'reload-status' }, e ? 'failed' : 'ok')),
    ),
    e
      ? h(
          'div',
          { class: 'alert-box', role: 'alert' },
          h('strong', {}, 'The last change to the rules folder was rejected'),
          ` (${when(e.at)}); the previous set stays loaded: `,
          h('code', {}, `${e.file}:${e.line}:${e.column}`),
          ` ${e.message}`,
        )
      : null,
  );
}

function ruleErrors(map) {
  const entries = Object.entries(map ?? {}).sort((a, b) => b[1] - a[1]);
  if (!entries.length) return h('p', { class: 'hint' }, 'No rule failed at run time in this period.');
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { class: 'rule-errors-table' },
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Rule'), h('th', { scope: 'col' }, 'Failures'))),
      h('tbody', {}, entries.map(([rule, n]) => h('tr', {}, h('td', {}, rule), h('td', { class: 'num' }, String(n))))),
    ),
  );
}
