// Outcomes: did the hot leads buy? (GET /report, SPEC 11): the headline (the
// top tier's share of the contacts against its share of the sales), the
// per-tier table, the calibration curve (sale rate per score decile), and
// the reasons, tags and disqualifications ranked by lift. Every rate is
// shown with the counts it comes from; a group of fewer than 30 contacts is
// flagged: its rate is noise.

import { api, ApiError } from './api.js';
import { h, clear, field, fmt, when, rateText, money } from './dom.js';
import { calibrationChart } from './charts.js';
import { cssName } from './playground.js';

const WINDOWS = {
  '30d': 'Last 30 days',
  '90d': 'Last 90 days',
  '180d': 'Last 180 days',
  '365d': 'Last 365 days',
};

/** Groups smaller than this are flagged (SPEC 11: "the rate is noise"). */
export const SMALL_GROUP = 30;
const LEGEND = 'fewer than 30 contacts: the rate is noise';

export function outcomesPage(ctx) {
  let destroyChart = null;
  let seq = 0;
  let since = WINDOWS[ctx.params.get('since')] ? ctx.params.get('since') : '90d';
  const select = h(
    'select',
    { name: 'since', onchange: () => { since = select.value; ctx.setParam('since', since); load(); } },
    Object.entries(WINDOWS).map(([key, label]) => h('option', { value: key, selected: key === since }, label)),
  );
  const body = h('div', { class: 'outcomes-body', 'aria-live': 'polite' }, h('p', { class: 'hint' }, 'Loading…'));
  const el = h(
    'section',
    { class: 'page outcomes', 'aria-labelledby': 'oc-title' },
    h('h1', { id: 'oc-title' }, 'Outcomes'),
    h(
      'p',
      { class: 'lede' },
      'Did the hot leads buy? The contacts first seen in the window, by the tier and score stored for their latest contact event, against the calls and outcomes iClosed sent for them.',
    ),
    h('div', { class: 'toolbar' }, field('Contacts first seen', select), h('button', { type: 'button', class: 'secondary', onclick: () => load() }, 'Refresh')),
    body,
  );

  async function load() {
    const mine = ++seq;
    body.setAttribute('aria-busy', 'true');
    try {
      const report = await api('GET', `/report?since=${encodeURIComponent(since)}`);
      if (mine !== seq) return;
      render(report);
    } catch (e) {
      if (mine !== seq || (e instanceof ApiError && e.status === 401)) return;
      destroyChart?.();
      destroyChart = null;
      clear(body, h('p', { class: 'error-text', role: 'alert' }, `The outcomes report is unavailable: ${e.message}`));
    } finally {
      if (mine === seq) body.setAttribute('aria-busy', 'false');
    }
  }

  function render(r) {
    destroyChart?.();
    destroyChart = null;
    const flagged = { any: false };
    const chartBox = h('div', { class: 'chart' });
    const deciles = r.deciles ?? [];
    clear(
      body,
      headline(r),
      h(
        'dl',
        { class: 'stats-cards' },
        card('Contacts', r.contacts, 'contacts'),
        card('Booked', r.booked, 'booked'),
        card('With an outcome', r.with_outcome, 'with-outcome'),
        card('Without outcome (open)', r.open, 'open'),
        card('Sales', r.sales, 'sales'),
        card('Sale rate', rateText(r.sale_rate, r.sales, r.contacts), 'sale-rate', 'small-value'),
        card('Revenue', money(r.revenue), 'revenue'),
        card('Since', when(r.since), 'since', 'small-value'),
      ),
      h('h2', {}, 'Tiers'),
      tiersTable(r, flagged),
      h('h2', {}, 'Calibration: sale rate per score decile'),
      deciles.length
        ? [
            h('p', { class: 'hint' }, 'Contacts ordered by score and cut into ten groups of equal size, lowest scores first. With good rules the bars rise to the right.'),
            chartBox,
            decilesTable(deciles, flagged),
          ]
        : h('p', { class: 'hint' }, 'No contacts in this window.'),
      h('h2', {}, 'Reasons, by lift'),
      h('p', { class: 'hint' }, 'Lift: the sale rate of the contacts with the reason over the rate of those without.'),
      splitTable(r, r.reasons, [['Reason', (x) => x.reason], ['Rule', (x) => h('span', { class: 'rule' }, x.rule)]], 'reasons', flagged),
      h('h2', {}, 'Tags, by lift'),
      splitTable(r, r.tags, [['Tag', (x) => h('span', { class: 'tag' }, x.tag)]], 'tags', flagged),
      h('h2', {}, 'Disqualifications, by lift'),
      splitTable(r, r.disqualifications, [['Rule', (x) => h('span', { class: 'rule' }, x.rule)]], 'disqualifications', flagged),
      flagged.any ? h('p', { class: 'hint legend', 'data-field': 'legend' }, h('span', { class: 'noise', 'aria-hidden': 'true' }, '*'), ` ${LEGEND}`) : null,
    );
    if (deciles.length) destroyChart = calibrationChart(chartBox, deciles, r.sale_rate);
  }

  load();
  return {
    el,
    destroy() {
      seq += 1;
      destroyChart?.();
    },
  };
}

function card(label, value, key, extra) {
  return h('div', { class: 'card' }, h('dt', {}, label), h('dd', { class: extra, dataset: { field: key } }, typeof value === 'string' ? value : fmt(value)));
}

/** "hot: 15.6 % of the contacts (468/3000) brought 63.2 % of the sales (60/95)", and the contacts without outcome. */
function headline(r) {
  const top = r.top_tier;
  const row = (r.tiers ?? []).find((t) => t.tier === top?.tier);
  if (!top || !r.contacts) {
    return h('p', { class: 'headline', 'data-field': 'headline' }, 'No contact was first seen in this window.');
  }
  return h(
    'div',
    { class: 'headline', 'data-field': 'headline' },
    h(
      'p',
      {},
      'The top tier ',
      h('span', { class: `tier tier-${cssName(top.tier)}`, 'data-field': 'top-tier' }, top.tier),
      ' holds ',
      h('strong', { 'data-field': 'top-share-of-contacts' }, rateText(top.share_of_contacts, row?.contacts, r.contacts)),
      ' of the contacts and brought ',
      h('strong', { 'data-field': 'top-share-of-sales' }, rateText(top.share_of_sales, row?.sales, r.sales)),
      ' of the sales.',
    ),
    h(
      'p',
      { class: 'hint' },
      h('span', { 'data-field': 'headline-open' }, String(r.open ?? 0)),
      ` of ${r.contacts} contacts have no outcome yet (they may still buy); `,
      `${r.booked ?? 0} booked a call.`,
    ),
  );
}

/** A group's name with the noise marker when it has fewer than 30 contacts. */
function flaggedName(name, contacts, flagged) {
  const small = contacts > 0 && contacts < SMALL_GROUP;
  if (small) flagged.any = true;
  return [name, small ? h('span', { class: 'noise', title: LEGEND, 'data-field': 'noise' }, ' *') : null];
}

function tiersTable(r, flagged) {
  const tiers = r.tiers ?? [];
  if (!tiers.length) return h('p', { class: 'hint' }, 'No tiers.');
  const cols = ['Tier', 'Contacts', 'Booked', 'With outcome', 'Sales', 'Sale rate', 'Revenue', 'Share of sales', 'Lift'];
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { class: 'outcome-tiers', 'data-field': 'tiers' },
      h('caption', {}, 'Lift: the tier’s sale rate over the overall sale rate.'),
      h('thead', {}, h('tr', {}, cols.map((c, i) => h('th', { scope: 'col', class: i ? 'num' : undefined }, c)))),
      h(
        'tbody',
        {},
        tiers.map((t) =>
          h(
            'tr',
            { dataset: { tier: t.tier } },
            h('th', { scope: 'row' }, flaggedName(h('span', { class: `tier tier-${cssName(t.tier)}` }, t.tier), t.contacts, flagged)),
            num(t.contacts, 'contacts'),
            num(t.booked, 'booked'),
            num(t.with_outcome, 'with-outcome'),
            num(t.sales, 'sales'),
            num(rateText(t.sale_rate, t.sales, t.contacts), 'sale-rate'),
            num(money(t.revenue), 'revenue'),
            num(rateText(t.share_of_sales, t.sales, r.sales), 'share-of-sales'),
            num(lift(t.lift), 'lift'),
          ),
        ),
      ),
      h(
        'tfoot',
        {},
        h(
          'tr',
          {},
          h('th', { scope: 'row' }, 'all'),
          num(r.contacts, 'contacts'),
          num(r.booked, 'booked'),
          num(r.with_outcome, 'with-outcome'),
          num(r.sales, 'sales'),
          num(rateText(r.sale_rate, r.sales, r.contacts), 'sale-rate'),
          num(money(r.revenue), 'revenue'),
          h('td', {}),
          h('td', {}),
        ),
      ),
    ),
  );
}

function decilesTable(deciles, flagged) {
  return h(
    'details',
    { class: 'deciles' },
    h('summary', {}, 'The deciles as a table'),
    h(
      'div',
      { class: 'table-wrap' },
      h(
        'table',
        { 'data-field': 'deciles' },
        h('thead', {}, h('tr', {}, ['Scores', 'Contacts', 'Sales', 'Sale rate'].map((c, i) => h('th', { scope: 'col', class: i ? 'num' : undefined }, c)))),
        h(
          'tbody',
          {},
          deciles.map((d) =>
            h(
              'tr',
              {},
              h('th', { scope: 'row' }, flaggedName(`${d.min_score}–${d.max_score}`, d.contacts, flagged)),
              num(d.contacts, 'contacts'),
              num(d.sales, 'sales'),
              num(rateText(d.sale_rate, d.sales, d.contacts), 'sale-rate'),
            ),
          ),
        ),
      ),
    ),
  );
}

/** Reasons, tags or disqualifications: contacts with it against those without, highest lift first. */
function splitTable(r, rows, names, key, flagged) {
  if (!rows?.length) return h('p', { class: 'hint' }, `No ${key} in this window.`);
  const sorted = [...rows].sort((a, b) => (b.lift ?? -Infinity) - (a.lift ?? -Infinity));
  const cols = [...names.map((n) => n[0]), 'Contacts', 'Sales', 'Sale rate with', 'Sale rate without', 'Lift'];
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { class: 'outcome-splits', 'data-field': key },
      h('thead', {}, h('tr', {}, cols.map((c, i) => h('th', { scope: 'col', class: i >= names.length ? 'num' : undefined }, c)))),
      h(
        'tbody',
        {},
        sorted.map((x) => {
          const otherContacts = (r.contacts ?? 0) - x.contacts;
          const otherSales = (r.sales ?? 0) - x.sales;
          return h(
            'tr',
            {},
            names.map(([, cell], i) =>
              i === 0 ? h('th', { scope: 'row' }, flaggedName(cell(x), x.contacts, flagged)) : h('td', {}, cell(x)),
            ),
            num(x.contacts, 'contacts'),
            num(x.sales, 'sales'),
            num(rateText(x.sale_rate_with, x.sales, x.contacts), 'sale-rate-with'),
            num(rateText(x.sale_rate_without, otherSales, otherContacts), 'sale-rate-without'),
            num(lift(x.lift), 'lift'),
          );
        }),
      ),
    ),
  );
}

/** A lift with two decimals (the engine's precision), '—' for null. */
function lift(value) {
  return value === null || value === undefined || !Number.isFinite(value) ? '—' : value.toFixed(2);
}

function num(value, key) {
  return h('td', { class: 'num', dataset: { field: key } }, typeof value === 'string' ? value : fmt(value));
}
