// Delivery attempts as a table (GET /deliveries/{id}/attempts, and the
// attempts of a contact's deliveries): time, HTTP status or error class,
// latency and the first 1 KiB of the answer, shown as text.

import { h, when } from './dom.js';

const BODY_LIMIT = 1024;

/** The outcome of one attempt: its HTTP status, else its error class. */
export function attemptResult(a) {
  if (a.status !== null && a.status !== undefined) return String(a.status);
  return a.error ?? '—';
}

function resultClass(a) {
  if (a.status !== null && a.status !== undefined) return a.status >= 200 && a.status < 300 ? 'ok' : 'error-text';
  return a.error ? 'error-text' : '';
}

/** `attempts` oldest first; `showDestination` adds a destination column. */
export function attemptsTable(attempts, { showDestination = false, caption } = {}) {
  if (!attempts?.length) return h('p', { class: 'hint empty', 'data-field': 'no-attempts' }, 'No attempt yet.');
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { class: 'attempts-table' },
      caption ? h('caption', {}, caption) : null,
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          ['#', 'Time', showDestination ? 'Destination' : null, 'Status or error', 'Latency', 'Response body (first 1 KiB)']
            .filter(Boolean)
            .map((c) => h('th', { scope: 'col' }, c)),
        ),
      ),
      h(
        'tbody',
        {},
        attempts.map((a, i) =>
          h(
            'tr',
            { class: 'attempt', dataset: { destination: a.destination ?? '' } },
            h('td', { class: 'num' }, String(i + 1)),
            h('td', { class: 'small' }, when(a.at)),
            showDestination ? h('td', { class: 'mono small' }, a.destination ?? '—') : null,
            h('td', { class: resultClass(a), 'data-field': 'attempt-result' }, attemptResult(a)),
            h('td', { class: 'num', 'data-field': 'attempt-latency' }, a.latency_ms == null ? '—' : `${a.latency_ms} ms`),
            h(
              'td',
              { class: 'response-cell' },
              a.response_body
                ? h('pre', { class: 'response-body', 'data-field': 'response-body' }, String(a.response_body).slice(0, BODY_LIMIT))
                : h('span', { class: 'hint' }, '—'),
            ),
          ),
        ),
      ),
    ),
  );
}
