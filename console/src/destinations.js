// Destinations (SPEC 10): every destination in force with its breaker,
// backlog and last results (GET /destinations), and the destinations file's
// last rejected reload, at its line and column.

import { api, ApiError } from './api.js';
import { h, clear, when } from './dom.js';

const REFRESH_MS = 5000;

export function destinationsPage() {
  let timer = null;
  let seq = 0;
  const fileError = h('div', { 'aria-live': 'polite' });
  const panel = h('div', { class: 'table-panel', 'aria-live': 'polite' }, h('p', { class: 'hint' }, 'Loading…'));
  const el = h(
    'section',
    { class: 'page destinations', 'aria-labelledby': 'ds-title' },
    h('h1', { id: 'ds-title' }, 'Destinations'),
    h(
      'p',
      { class: 'lede' },
      'Where scored contacts are sent: each destination with its own queue, retries, rate limit and circuit breaker (from the destinations file, or --forward-url as “default”). Secrets never show here.',
    ),
    h('div', { class: 'toolbar' }, h('span'), h('div', { class: 'actions' }, h('button', { type: 'button', class: 'secondary', onclick: () => load() }, 'Refresh'))),
    fileError,
    panel,
  );

  async function load() {
    clearTimeout(timer);
    const mine = ++seq;
    panel.setAttribute('aria-busy', 'true');
    try {
      const data = await api('GET', '/destinations');
      if (mine !== seq) return;
      renderFileError(data.last_error);
      render(data.destinations ?? []);
    } catch (e) {
      if (mine !== seq || (e instanceof ApiError && e.status === 401)) return;
      clear(panel, h('p', { class: 'error-text', role: 'alert' }, `Destinations could not be listed: ${e.message}`));
    } finally {
      if (mine === seq) {
        panel.setAttribute('aria-busy', 'false');
        timer = setTimeout(load, REFRESH_MS);
      }
    }
  }

  function renderFileError(e) {
    if (!e) {
      clear(fileError);
      return;
    }
    clear(
      fileError,
      h(
        'div',
        { class: 'alert-box', role: 'alert', 'data-field': 'file-error' },
        h('strong', {}, 'The last change to the destinations file was rejected'),
        ` (${when(e.at)}); the previous destinations stay in force: `,
        h('code', { 'data-field': 'file-error-location' }, `${e.file}:${e.line}:${e.column}`),
        ' ',
        h('span', { 'data-field': 'file-error-message' }, e.message ?? ''),
      ),
    );
  }

  function render(list) {
    if (!list.length) {
      clear(panel, h('p', { class: 'hint empty' }, 'No destination: start the engine with --forward-url or a destinations file.'));
      return;
    }
    clear(
      panel,
      h(
        'div',
        { class: 'table-wrap' },
        h(
          'table',
          { class: 'destinations-table' },
          h(
            'thead',
            {},
            h(
              'tr',
              {},
              ['Name', 'URL', 'Template', 'When', 'Rate', 'Breaker', 'Pending', 'Dead', 'Last success', 'Last failure', 'Last error'].map((c) =>
                h('th', { scope: 'col' }, c),
              ),
            ),
          ),
          h(
            'tbody',
            {},
            list.map((d) =>
              h(
                'tr',
                { dataset: { destination: d.name } },
                h('th', { scope: 'row', class: 'mono' }, d.name),
                h('td', { class: 'mono small url', 'data-field': 'url' }, d.url ?? '—'),
                h('td', { class: 'small', 'data-field': 'template' }, d.template ?? '—'),
                h('td', { class: 'mono small', 'data-field': 'when' }, d.when ?? 'every event'),
                h('td', { class: 'small', 'data-field': 'rate' }, d.rate ?? '—'),
                h('td', { 'data-field': 'breaker' }, h('span', { class: `breaker breaker-${d.breaker}` }, d.breaker ?? '—')),
                h('td', { class: 'num', 'data-field': 'pending' }, countLink(d.pending, 'pending', d.name)),
                h('td', { class: `num ${d.dead ? 'neg' : ''}`, 'data-field': 'dead' }, countLink(d.dead, 'dead', d.name)),
                h('td', { class: 'small', 'data-field': 'last-success' }, when(d.last_success_at)),
                h('td', { class: 'small', 'data-field': 'last-failure' }, when(d.last_failure_at)),
                h('td', { class: 'small wrap', 'data-field': 'last-error' }, d.last_error ?? '—'),
              ),
            ),
          ),
        ),
      ),
    );
  }

  load();
  return {
    el,
    destroy() {
      clearTimeout(timer);
      seq += 1;
    },
  };
}

function countLink(n, status, destination) {
  const value = String(n ?? 0);
  if (!n) return value;
  return h('a', { href: `#/deliveries?${new URLSearchParams({ status, destination })}`, 'aria-label': `${value} ${status} deliveries of ${destination}` }, value);
}
