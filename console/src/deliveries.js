// Deliveries: pending, dead and delivered forwards with their last status
// and error; retry one dead delivery or all of them.

import { api, ApiError } from './api.js';
import { h, clear, when, tabs as makeTabs, uid } from './dom.js';

const STATUSES = [
  { key: 'pending', label: 'Pending' },
  { key: 'dead', label: 'Dead' },
  { key: 'delivered', label: 'Delivered' },
];
const REFRESH_MS = 5000;

export function deliveriesPage(ctx) {
  let status = ctx.params.get('status') ?? 'dead';
  if (!STATUSES.some((s) => s.key === status)) status = 'dead';
  let timer = null;
  let seq = 0;
  const panelId = uid('deliveries-panel');
  const message = h('p', { class: 'message', role: 'status', 'aria-live': 'polite' });
  const panel = h('div', { id: panelId, role: 'tabpanel', class: 'table-panel', tabindex: '0' });
  const retryAll = h('button', { type: 'button', class: 'primary', onclick: retryDead }, 'Retry all dead');
  const refreshBtn = h('button', { type: 'button', class: 'secondary', onclick: () => load() }, 'Refresh');
  const t = makeTabs({
    label: 'Delivery status',
    items: STATUSES,
    selected: status,
    panelId,
    onSelect: (key) => {
      status = key;
      ctx.setParam('status', key);
      load();
    },
  });
  const el = h(
    'section',
    { class: 'page deliveries', 'aria-labelledby': 'dl-title' },
    h('h1', { id: 'dl-title' }, 'Deliveries'),
    h('p', { class: 'lede' }, 'Scored contacts forwarded to the downstream URL. A dead delivery was refused for good or ran out of retries; retry it once the receiver is fixed.'),
    h('div', { class: 'toolbar' }, t.el, h('div', { class: 'actions' }, refreshBtn, retryAll)),
    message,
    panel,
  );

  async function load() {
    clearTimeout(timer);
    const mine = ++seq;
    panel.setAttribute('aria-busy', 'true');
    panel.setAttribute('aria-labelledby', t.buttons.find((b) => b.dataset.key === status)?.id ?? '');
    try {
      const data = await api('GET', `/deliveries?status=${status}&limit=100`);
      if (mine !== seq) return;
      render(data.deliveries ?? []);
    } catch (e) {
      if (mine !== seq || (e instanceof ApiError && e.status === 401)) return;
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
      clear(panel, h('p', { class: 'hint empty' }, `No ${status} deliveries.`));
      return;
    }
    const timeCol = status === 'delivered' ? 'Delivered' : status === 'pending' ? 'Next attempt' : 'Created';
    clear(
      panel,
      h(
        'div',
        { class: 'table-wrap' },
        h(
          'table',
          { class: 'deliveries-table', 'data-status': status },
          h(
            'thead',
            {},
            h(
              'tr',
              {},
              ['Contact', 'Event id', 'Attempts', 'Last status', 'Last error', timeCol, status === 'dead' ? 'Action' : null]
                .filter(Boolean)
                .map((c) => h('th', { scope: 'col' }, c)),
            ),
          ),
          h(
            'tbody',
            {},
            list.map((d) =>
              h(
                'tr',
                { dataset: { id: d.id, contact: String(d.contact_id) } },
                h('th', { scope: 'row' }, String(d.contact_id)),
                h('td', { class: 'mono small' }, d.id),
                h('td', { class: 'num' }, String(d.attempts ?? 0)),
                h('td', { class: 'num', 'data-field': 'last-status' }, d.last_status == null ? '—' : String(d.last_status)),
                h('td', { class: 'small', 'data-field': 'last-error' }, d.last_error ?? '—'),
                h('td', { class: 'small' }, when(status === 'delivered' ? d.delivered_at : status === 'pending' ? d.next_attempt_at : d.created_at)),
                status === 'dead'
                  ? h('td', {}, h('button', { type: 'button', class: 'secondary small', 'aria-label': `Retry delivery of contact ${d.contact_id}`, onclick: (e) => retryOne(d, e.currentTarget) }, 'Retry'))
                  : null,
              ),
            ),
          ),
        ),
      ),
    );
  }

  async function retryOne(d, button) {
    button.disabled = true;
    try {
      const answer = await api('POST', `/deliveries/${encodeURIComponent(d.id)}/retry`);
      message.textContent = answer.requeued
        ? `Delivery of contact ${d.contact_id} requeued.`
        : `Delivery of contact ${d.contact_id} was no longer dead.`;
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 401)) message.textContent = `Retry failed: ${e.message}`;
    }
    load();
  }

  async function retryDead() {
    retryAll.disabled = true;
    try {
      const answer = await api('POST', '/deliveries/retry-dead');
      message.textContent = `${answer.requeued} dead deliver${answer.requeued === 1 ? 'y' : 'ies'} requeued.`;
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 401)) message.textContent = `Retry failed: ${e.message}`;
    } finally {
      retryAll.disabled = false;
    }
    load();
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
