// Backtest: the edited rules against stored history (POST /backtest, SPEC 8):
// tier transition matrix, before/after score distribution, top changes,
// and, against stored outcomes (SPEC 11), the equal-volume comparison: the
// sales each side's k highest-scored contacts brought, and each side's
// per-tier sales.

import { api, ApiError } from './api.js';
import { h, clear, field, short, fmt, when, contactLink, rateText, money } from './dom.js';
import { state as rules, loadRules, candidate, changedCount } from './rules-state.js';
import { distributionChart } from './charts.js';
import { cssName } from './playground.js';

export function backtestPage() {
  let destroyChart = null;
  let ticker = null;
  let controller = null;

  const days = h('input', { type: 'number', min: '1', max: '3650', value: '30', inputmode: 'numeric', required: true });
  const allEvents = h('input', { type: 'checkbox' });
  const against = h(
    'select',
    {},
    h('option', { value: 'rules' }, 'the loaded rules (scored again now)'),
    h('option', { value: 'stored' }, 'the scores stored at ingest'),
  );
  const top = h('input', { type: 'number', min: '1', max: '500', value: '20', inputmode: 'numeric' });
  const runBtn = h('button', { type: 'submit', class: 'primary' }, 'Run backtest');
  const note = h('p', { class: 'hint', 'data-field': 'candidate-note' });
  const progress = h('div', { class: 'progress', role: 'status', 'aria-live': 'polite' });
  const report = h('div', { class: 'report', 'aria-live': 'polite' });

  const form = h(
    'form',
    { class: 'backtest-form', onsubmit: run },
    field('Since (days)', days, 'The latest event of each contact received in this window.'),
    h('div', { class: 'field checkbox' }, allEvents, h('label', { for: (allEvents.id = 'bt-all') }, 'Every event, not only the latest per contact')),
    field('Compare with', against),
    field('Top changed contacts', top),
    h('div', { class: 'actions' }, runBtn),
  );

  const el = h(
    'section',
    { class: 'page backtest', 'aria-labelledby': 'bt-title' },
    h('h1', { id: 'bt-title' }, 'Backtest'),
    h('p', { class: 'lede' }, 'Score stored contacts with the rules as edited in the Playground and compare. Nothing is stored or forwarded.'),
    note,
    form,
    progress,
    report,
  );

  function describeCandidate() {
    const n = changedCount();
    note.textContent = n
      ? `The candidate is the Playground's edited rule set (${n} file${n > 1 ? 's' : ''} changed).`
      : 'The candidate is the loaded rule set as it is (edit rules in the Playground to compare a change).';
  }

  async function run(event) {
    event?.preventDefault();
    const n = Number(days.value);
    if (!Number.isFinite(n) || n < 1) {
      progress.textContent = 'Enter a number of days (1 or more).';
      days.focus();
      return;
    }
    if (!rules.ready) await loadRules();
    const body = {
      ...candidate(),
      since: `${Math.floor(n)}d`,
      all_events: allEvents.checked,
      against: against.value,
      top: Math.max(1, Math.floor(Number(top.value) || 20)),
    };
    controller?.abort();
    controller = new AbortController();
    const started = performance.now();
    runBtn.disabled = true;
    report.setAttribute('aria-busy', 'true');
    const bar = h('progress', { 'aria-label': 'Backtest running' });
    const elapsed = h('span', {}, 'Running the backtest…');
    clear(progress, h('div', { class: 'running' }, bar, elapsed));
    ticker = setInterval(() => {
      elapsed.textContent = `Running the backtest… ${((performance.now() - started) / 1000).toFixed(0)} s`;
    }, 500);
    try {
      const result = await api('POST', '/backtest', body, { signal: controller.signal });
      clear(progress, `Done in ${fmt(result.duration_ms)} ms.`);
      render(result);
    } catch (e) {
      if (e.name === 'AbortError') return;
      if (e instanceof ApiError && e.status === 429) {
        const after = e.retryAfter ? ` Try again in ${e.retryAfter} s.` : '';
        clear(progress, h('p', { class: 'error-text', role: 'alert' }, `Another backtest is running on the engine.${after}`));
      } else if (e instanceof ApiError && e.status === 422) {
        clear(
          progress,
          h('div', { class: 'error-text', role: 'alert' }, h('p', {}, 'The edited rules do not compile; fix them in the Playground:'),
            h('ul', {}, (e.body.errors ?? []).map((x) => h('li', {}, `${x.file}:${x.line}:${x.column} ${x.message}`)))),
        );
      } else if (!(e instanceof ApiError && e.status === 401)) {
        clear(progress, h('p', { class: 'error-text', role: 'alert' }, `The backtest failed: ${e.message}`));
      }
    } finally {
      clearInterval(ticker);
      runBtn.disabled = false;
      report.setAttribute('aria-busy', 'false');
    }
  }

  function render(r) {
    destroyChart?.();
    destroyChart = null;
    const baseTiers = r.tiers?.baseline ?? {};
    const candTiers = r.tiers?.candidate ?? {};
    const tierNames = orderTiers([...new Set([...Object.keys(baseTiers), ...Object.keys(candTiers), ...(r.transitions ?? []).flatMap((t) => [t.from, t.to])])], baseTiers);
    const moved = new Map((r.transitions ?? []).map((t) => [`${t.from}\u0000${t.to}`, t.count]));
    const outOf = (tier) => (r.transitions ?? []).filter((t) => t.from === tier).reduce((a, t) => a + t.count, 0);
    const chartBox = h('div', { class: 'chart' });

    clear(
      report,
      h(
        'dl',
        { class: 'stats-cards' },
        card('Contacts', r.contacts, 'contacts'),
        card('Since', when(r.since)),
        card('Changed tier', (r.transitions ?? []).reduce((a, t) => a + t.count, 0), 'changed-tier'),
        card('Mean score change', fmt(r.score_delta?.mean)),
        card('Loaded rules', short(r.baseline?.rules_version), 'baseline-version'),
        card('Edited rules', short(r.candidate?.rules_version), 'candidate-version'),
      ),
      r.outcomes ? againstOutcomes(r.outcomes) : null,
      h('h2', {}, 'Tier transitions'),
      tierNames.length
        ? h(
            'div',
            { class: 'table-wrap' },
            h(
              'table',
              { class: 'matrix', 'data-field': 'transitions' },
              h('caption', {}, 'Rows: tier with the loaded rules. Columns: tier with the edited rules. Cells: contacts.'),
              h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'from \\ to'), tierNames.map((t) => h('th', { scope: 'col' }, t)), h('th', { scope: 'col' }, 'total'))),
              h(
                'tbody',
                {},
                tierNames.map((from) =>
                  h(
                    'tr',
                    {},
                    h('th', { scope: 'row' }, from),
                    tierNames.map((to) => {
                      if (from === to) {
                        const stayed = Math.max((baseTiers[from] ?? 0) - outOf(from), 0);
                        return h('td', { class: 'num same', dataset: { from, to } }, String(stayed));
                      }
                      const count = moved.get(`${from}\u0000${to}`) ?? 0;
                      return h('td', { class: count ? 'num moved' : 'num zero', dataset: { from, to } }, String(count));
                    }),
                    h('td', { class: 'num total' }, String(baseTiers[from] ?? 0)),
                  ),
                ),
              ),
              h('tfoot', {}, h('tr', {}, h('th', { scope: 'row' }, 'total'), tierNames.map((t) => h('td', { class: 'num total' }, String(candTiers[t] ?? 0))), h('td', { class: 'num total' }, String(r.contacts ?? '')))),
            ),
          )
        : h('p', { class: 'hint' }, 'No contacts in this window.'),
      h('h2', {}, 'Score distribution'),
      r.distribution ? chartBox : h('p', { class: 'hint' }, 'The engine did not send a score distribution.'),
      scoreDelta(r.score_delta),
      h('h2', {}, 'Contacts that change most'),
      changedTable(r.changed ?? []),
      r.errors?.length ? [h('h2', {}, 'Rule errors (edited rules)'), errorsTable(r.errors)] : null,
    );
    if (r.distribution) destroyChart = distributionChart(chartBox, r.distribution);
  }

  describeCandidate();
  if (!rules.ready) loadRules().then(describeCandidate, () => {});

  return {
    el,
    destroy() {
      controller?.abort();
      clearInterval(ticker);
      destroyChart?.();
    },
  };
}

function card(label, value, key) {
  return h('div', { class: 'card' }, h('dt', {}, label), h('dd', { dataset: key ? { field: key } : undefined }, fmt(value)));
}

/** Tiers by their count order in the baseline is meaningless: use a known order when the names are the usual ones. */
function orderTiers(names, baseTiers) {
  const known = ['hot', 'warm', 'cold', 'scored', 'none', 'disqualified'];
  return names.sort((a, b) => {
    const ia = known.indexOf(a);
    const ib = known.indexOf(b);
    if (ia >= 0 || ib >= 0) return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib);
    return (baseTiers[b] ?? 0) - (baseTiers[a] ?? 0) || a.localeCompare(b);
  });
}

/**
 * The equal-volume comparison: each side ranks every contact by its score
 * (disqualified last); k is the size of the loaded rules' top tier; the
 * sales and revenue of each side's first k contacts, and the verdict.
 */
function againstOutcomes(o) {
  const base = o.baseline?.equal_volume ?? {};
  const cand = o.candidate?.equal_volume ?? {};
  const k = base.k ?? cand.k ?? 0;
  const diff = (cand.sales ?? 0) - (base.sales ?? 0);
  const verdict = diff > 0 ? 'better' : diff < 0 ? 'worse' : 'same';
  const n = Math.abs(diff);
  const text =
    verdict === 'same'
      ? `The edited rules capture the same number of sales in the top ${k} as the loaded rules (${cand.sales ?? 0}).`
      : `The edited rules capture ${n} ${verdict === 'better' ? 'more' : 'fewer'} sale${n === 1 ? '' : 's'} in the top ${k} than the loaded rules (${cand.sales ?? 0} against ${base.sales ?? 0}).`;
  const sideRow = (label, key, ev) =>
    h(
      'tr',
      { dataset: { side: key } },
      h('th', { scope: 'row' }, label),
      h('td', { class: 'num', 'data-field': 'k' }, String(ev.k ?? k)),
      h('td', { class: 'num', 'data-field': 'sales' }, String(ev.sales ?? 0)),
      h('td', { class: 'num', 'data-field': 'sale-rate' }, rateText(ev.k ? (ev.sales ?? 0) / ev.k : null, ev.sales ?? 0, ev.k ?? 0)),
      h('td', { class: 'num', 'data-field': 'revenue' }, money(ev.revenue ?? 0)),
    );
  return h(
    'section',
    { class: 'against-outcomes', 'aria-labelledby': 'bt-outcomes-title', 'data-field': 'outcomes' },
    h('h2', { id: 'bt-outcomes-title' }, 'Against outcomes'),
    h(
      'p',
      { class: `verdict verdict-${verdict}`, 'data-field': 'verdict', dataset: { verdict } },
      h('strong', {}, verdict === 'better' ? 'Better: ' : verdict === 'worse' ? 'Worse: ' : 'Same: '),
      text,
    ),
    h(
      'p',
      { class: 'hint' },
      `Equal volume: each side ranks every contact by its score, highest first (disqualified last); k = ${k} is the number of contacts in the loaded rules’ top tier. Only contacts first seen in the window count.`,
    ),
    h(
      'div',
      { class: 'table-wrap' },
      h(
        'table',
        { class: 'equal-volume', 'data-field': 'equal-volume' },
        h('caption', {}, `Sales among each side’s ${k} highest-scored contacts.`),
        h('thead', {}, h('tr', {}, ['Rules', 'Top k', 'Sales in the top k', 'Sale rate', 'Revenue in the top k'].map((c, i) => h('th', { scope: 'col', class: i ? 'num' : undefined }, c)))),
        h('tbody', {}, sideRow('Loaded rules', 'baseline', base), sideRow('Edited rules', 'candidate', cand)),
      ),
    ),
    h('h3', { class: 'sub' }, 'Sales per tier'),
    outcomeTiers(o.baseline?.tiers ?? [], o.candidate?.tiers ?? []),
  );
}

function outcomeTiers(base, cand) {
  const names = [...new Set([...base.map((t) => t.tier), ...cand.map((t) => t.tier)])];
  if (!names.length) return h('p', { class: 'hint' }, 'No contacts with outcomes in this window.');
  const byName = (list) => new Map(list.map((t) => [t.tier, t]));
  const b = byName(base);
  const c = byName(cand);
  const cells = (t, side) =>
    t
      ? [
          h('td', { class: 'num', dataset: { field: `${side}-contacts` } }, String(t.contacts)),
          h('td', { class: 'num', dataset: { field: `${side}-sales` } }, String(t.sales)),
          h('td', { class: 'num', dataset: { field: `${side}-sale-rate` } }, rateText(t.sale_rate, t.sales, t.contacts)),
        ]
      : [h('td', { class: 'num' }, '—'), h('td', { class: 'num' }, '—'), h('td', { class: 'num' }, '—')];
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { class: 'outcome-tiers', 'data-field': 'outcome-tiers' },
      h(
        'thead',
        {},
        h('tr', {}, h('td', {}), h('th', { scope: 'colgroup', colspan: '3' }, 'Loaded rules'), h('th', { scope: 'colgroup', colspan: '3' }, 'Edited rules')),
        h('tr', {}, ['Tier', 'Contacts', 'Sales', 'Sale rate', 'Contacts', 'Sales', 'Sale rate'].map((x, i) => h('th', { scope: 'col', class: i ? 'num' : undefined }, x))),
      ),
      h(
        'tbody',
        {},
        names.map((name) => h('tr', { dataset: { tier: name } }, h('th', { scope: 'row' }, h('span', { class: `tier tier-${cssName(name)}` }, name)), cells(b.get(name), 'baseline'), cells(c.get(name), 'candidate'))),
      ),
    ),
  );
}

function scoreDelta(d) {
  if (!d) return null;
  return h(
    'p',
    { class: 'hint' },
    `Score change per contact: mean ${fmt(d.mean)}, median ${fmt(d.p50)}, 90th percentile ${fmt(d.p90)}, min ${fmt(d.min)}, max ${fmt(d.max)}.`,
  );
}

function changedTable(changed) {
  if (!changed.length) return h('p', { class: 'hint' }, 'No contact changes score or tier.');
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { class: 'changed', 'data-field': 'changed' },
      h(
        'thead',
        {},
        h('tr', {}, ['Contact', 'Loaded', 'Edited', 'Reasons added', 'Reasons removed'].map((t) => h('th', { scope: 'col' }, t))),
      ),
      h(
        'tbody',
        {},
        changed.map((c) =>
          h(
            'tr',
            {},
            h('th', { scope: 'row' }, contactLink(c.contact_id)),
            h('td', {}, `${fmt(c.baseline?.score)} `, h('span', { class: `tier tier-${cssName(c.baseline?.tier)}` }, c.baseline?.tier ?? '')),
            h('td', {}, `${fmt(c.candidate?.score)} `, h('span', { class: `tier tier-${cssName(c.candidate?.tier)}` }, c.candidate?.tier ?? '')),
            h('td', {}, list(c.reasons_added)),
            h('td', {}, list(c.reasons_removed)),
          ),
        ),
      ),
    ),
  );
}

function list(items) {
  if (!items?.length) return '—';
  return h('ul', { class: 'plain' }, items.map((x) => h('li', {}, typeof x === 'string' ? x : JSON.stringify(x))));
}

function errorsTable(errors) {
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      {},
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Rule'), h('th', { scope: 'col' }, 'Contacts'), h('th', { scope: 'col' }, 'Example'))),
      h('tbody', {}, errors.map((e) => h('tr', {}, h('td', {}, e.rule), h('td', { class: 'num' }, String(e.count)), h('td', {}, e.example ?? '')))),
    ),
  );
}
