// Deliveries: pending, dead, delivered and skipped forwards, one per event
// and destination, with their last status and error; filter by destination,
// open a delivery's attempts, retry one dead delivery or all of them.

import { api, ApiError } from './api.js';
import { h, clear, when, tabs as makeTabs, uid, field, contactLink } from './dom.js';
import { attemptsTable } from './attempts.js';

const STATUSES = [
  { key: 'pending', label: 'Pending' },
  { key: 'dead', label: 'Dead' },
  { key: 'delivered', label: 'Delivered' },
  { key: 'skipped', label: 'Skipped' },
];
const REFRESH_MS = 5000;

const keyOf = (d) => `${d.id}\n${d.destination ?? ''}`;

export function deliveriesPage(ctx) {
  let status = ctx.params.get('status') ?? 'dead';
  if (!STATUSES.some((s) => s.key === status)) status = 'dead';
  let destination = ctx.params.get('destination') ?? '';
  let timer = null;
  let seq = 0;
  let lastSignature = null;
  /** Deliveries whose attempts are open, and their last attempts. */
  const open = new Set();
  const attempts = new Map();
  /** The attempts button to focus again after the table is redrawn. */
  let refocus = null;
  let toggles = new Map();
  const panelId = uid('deliveries-panel');
  const message = h('p', { class: 'message', role: 'status', 'aria-live': 'polite' });
  const panel = h('div', { id: panelId, role: 'tabpanel', class: 'table-panel', tabindex: '0' });
  const retryAll = h('button', { type: 'button', class: 'primary', onclick: retryDead }, 'Retry all dead');
  const refreshBtn = h('button', { type: 'button', class: 'secondary', onclick: () => load(true) }, 'Refresh');
  const destSelect = h(
    'select',
    {
      name: 'destination',
      onchange: () => {
        destination = destSelect.value;
        ctx.setParam('destination', destination);
        retryAll.textContent = destination ? `Retry all dead of ${destination}` : 'Retry all dead';
        load(true);
      },
    },
    h('option', { value: '' }, 'All destinations'),
    destination ? h('option', { value: destination, selected: true }, destination) : null,
  );
  if (destination) retryAll.textContent = `Retry all dead of ${destination}`;
  const t = makeTabs({
    label: 'Delivery status',
    items: STATUSES,
    selected: status,
    panelId,
    onSelect: (key) => {
      status = key;
      ctx.setParam('status', key);
      load(true);
    },
  });
  const el = h(
    'section',
    { class: 'page deliveries', 'aria-labelledby': 'dl-title' },
    h('h1', { id: 'dl-title' }, 'Deliveries'),
    h(
      'p',
      { class: 'lede' },
      'Scored contacts forwarded to each destination. A dead delivery was refused for good or ran out of retries; retry it once the receiver is fixed. Open a delivery’s attempts to see what the receiver answered.',
    ),
    h('div', { class: 'toolbar' }, t.el, h('div', { class: 'actions' }, field('Destination', destSelect), refreshBtn, retryAll)),
    message,
    panel,
  );

  async function loadDestinations() {
    try {
      const data = await api('GET', '/destinations');
      const names = (data.destinations ?? []).map((d) => d.name);
      if (destination && !names.includes(destination)) names.push(destination);
      clear(
        destSelect,
        h('option', { value: '' }, 'All destinations'),
        names.map((n) => h('option', { value: n, selected: n === destination }, n)),
      );
      destSelect.value = destination;
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return;
      destSelect.title = `Destinations could not be listed: ${e.message}`;
    }
  }

  async function fetchAttempts(d) {
    const q = d.destination ? `?${new URLSearchParams({ destination: d.destination })}` : '';
    const data = await api('GET', `/deliveries/${encodeURIComponent(d.id)}/attempts${q}`);
    return data.attempts ?? [];
  }

  async function load(force = false) {
    clearTimeout(timer);
    const mine = ++seq;
    panel.setAttribute('aria-busy', 'true');
    panel.setAttribute('aria-labelledby', t.buttons.find((b) => b.dataset.key === status)?.id ?? '');
    try {
      const q = new URLSearchParams({ status, limit: '100' });
      if (destination) q.set('destination', destination);
      const data = await api('GET', `/deliveries?${q}`);
      if (mine !== seq) return;
      const list = data.deliveries ?? [];
      const shown = new Set(list.map(keyOf));
      for (const k of [...open]) if (!shown.has(k)) open.delete(k);
      await Promise.all(
        list
          .filter((d) => open.has(keyOf(d)))
          .map(async (d) => {
            try {
              attempts.set(keyOf(d), { list: await fetchAttempts(d) });
            } catch (e) {
              if (!(e instanceof ApiError && e.status === 401)) attempts.set(keyOf(d), { error: e.message });
            }
          }),
      );
      if (mine !== seq) return;
      const signature = JSON.stringify([status, destination, list, [...open].map((k) => attempts.get(k))]);
      if (force || signature !== lastSignature) {
        lastSignature = signature;
        render(list);
      }
    } catch (e) {
      if (mine !== seq || (e instanceof ApiError && e.status === 401)) return;
      lastSignature = null;
      clear(panel, h('p', { class: 'error-text', role: 'alert' }, `Deliveries could not be listed: ${e.message}`));
    } finally {
      if (mine === seq) {
        panel.setAttribute('aria-busy', 'false');
        timer = setTimeout(load, REFRESH_MS);
      }
    }
  }

  function render(list) {
    if (!list.length) {
      clear(panel, h('p', { class: 'hint empty' }, `No ${status} deliveries${destination ? ` to ${destination}` : ''}.`));
      return;
    }
    const timeCol = status === 'delivered' ? 'Delivered' : status === 'pending' ? 'Next attempt' : 'Created';
    toggles = new Map();
    const columns = ['Contact', 'Destination', 'Event id', 'Attempts', 'Last status', 'Last error', timeCol, 'Actions'];
    clear(
      panel,
      h(
        'div',
        { class: 'table-wrap' },
        h(
          'table',
          { class: 'deliveries-table', 'data-status': status },
          h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', {}, list.map((d) => rows(d, columns.length))),
        ),
      ),
    );
    if (refocus !== null) {
      toggles.get(refocus)?.focus();
      refocus = null;
    }
  }

  function rows(d, span) {
    const key = keyOf(d);
    const isOpen = open.has(key);
    const attemptsId = uid('attempts');
    const toggle = h(
      'button',
      {
        type: 'button',
        class: 'secondary small',
        'aria-expanded': isOpen ? 'true' : 'false',
        'aria-controls': attemptsId,
        'aria-label': `${isOpen ? 'Hide' : 'Show'} attempts of contact ${d.contact_id} to ${d.destination ?? 'default'}`,
        onclick: () => toggleAttempts(d),
      },
      isOpen ? 'Hide attempts' : 'Attempts',
    );
    toggles.set(key, toggle);
    const row = h(
      'tr',
      { dataset: { id: d.id, contact: String(d.contact_id), destination: d.destination ?? '' } },
      h('th', { scope: 'row' }, contactLink(d.contact_id)),
      h('td', { class: 'mono small', 'data-field': 'destination' }, d.destination ?? '—'),
      h('td', { class: 'mono small' }, d.id),
      h('td', { class: 'num' }, String(d.attempts ?? 0)),
      h('td', { class: 'num', 'data-field': 'last-status' }, d.last_status == null ? '—' : String(d.last_status)),
      h('td', { class: 'small wrap', 'data-field': 'last-error' }, d.last_error ?? '—'),
      h('td', { class: 'small' }, when(status === 'delivered' ? d.delivered_at : status === 'pending' ? d.next_attempt_at : d.created_at)),
      h(
        'td',
        { class: 'row-actions' },
        toggle,
        status === 'dead'
          ? h(
              'button',
              {
                type: 'button',
                class: 'secondary small',
                'aria-label': `Retry delivery of contact ${d.contact_id} to ${d.destination ?? 'default'}`,
                onclick: (e) => retryOne(d, e.currentTarget),
              },
              'Retry',
            )
          : null,
      ),
    );
    if (!isOpen) return row;
    const a = attempts.get(key);
    return [
      row,
      h(
        'tr',
        { class: 'attempts-row', dataset: { attemptsOf: d.id, destination: d.destination ?? '' } },
        h(
          'td',
          { colspan: String(span), id: attemptsId },
          !a
            ? h('p', { class: 'hint' }, 'Loading attempts…')
            : a.error
              ? h('p', { class: 'error-text' }, `Attempts could not be listed: ${a.error}`)
              : attemptsTable(a.list, { caption: `Attempts of contact ${d.contact_id} to ${d.destination ?? 'default'}, oldest first` }),
        ),
      ),
    ];
  }

  function toggleAttempts(d) {
    const key = keyOf(d);
    if (open.has(key)) open.delete(key);
    else open.add(key);
    refocus = key;
    load(true);
  }

  async function retryOne(d, button) {
    button.disabled = true;
    try {
      const q = d.destination ? `?${new URLSearchParams({ destination: d.destination })}` : '';
      const answer = await api('POST', `/deliveries/${encodeURIComponent(d.id)}/retry${q}`);
      const to = d.destination ? ` (to ${d.destination})` : '';
      message.textContent = answer.requeued
        ? `Delivery of contact ${d.contact_id} requeued.${to}`
        : `Delivery of contact ${d.contact_id} was no longer dead.${to}`;
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 401)) message.textContent = `Retry failed: ${e.message}`;
    }
    load(true);
  }

  async function retryDead() {
    retryAll.disabled = true;
    try {
      const q = destination ? `?${new URLSearchParams({ destination })}` : '';
      const answer = await api('POST', `/deliveries/retry-dead${q}`);
      message.textContent = `${answer.requeued} dead deliver${answer.requeued === 1 ? 'y' : 'ies'} requeued${destination ? ` to ${destination}` : ''}.`;
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 401)) message.textContent = `Retry failed: ${e.message}`;
    } finally {
      retryAll.disabled = false;
    }
    load(true);
  }

  loadDestinations();
  load(true);
  return {
    el,
    destroy() {
      clearTimeout(timer);
      seq += 1;
    },
  };
}
