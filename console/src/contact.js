// Contact: one contact's timeline (GET /contacts/{id}): when it was first
// seen, its events in the order received with score, tier, rules version
// and reasons, and each event's deliveries per destination with their
// attempts. Reached from every contact id the console shows, or by typing
// an id in the search box (a number is looked up by value, else a string).

import { api, ApiError } from './api.js';
import { h, clear, when, fmt, short, field, contactHref } from './dom.js';
import { attemptsTable } from './attempts.js';

export function contactPage(ctx) {
  const id = ctx.params.get('id') ?? '';
  const input = h('input', { type: 'search', name: 'contact-id', value: id, autocomplete: 'off', spellcheck: 'false', required: true, placeholder: 'e.g. 48213' });
  const form = h(
    'form',
    {
      class: 'inline-form contact-search',
      role: 'search',
      onsubmit: (event) => {
        event.preventDefault();
        const wanted = input.value.trim();
        if (!wanted) return;
        const target = contactHref(wanted);
        if (location.hash === target) load(wanted);
        else location.hash = target;
      },
    },
    field('Contact id', input),
    h('button', { type: 'submit', class: 'primary' }, 'Open contact'),
    h('p', { class: 'hint search-hint' }, 'The contact’s id as iClosed sends it, a number or a string.'),
  );
  const body = h('div', { class: 'contact-body', 'aria-live': 'polite' });
  const title = h('h1', { id: 'ct-title' }, id ? `Contact ${id}` : 'Contact');
  const el = h(
    'section',
    { class: 'page contact', 'aria-labelledby': 'ct-title' },
    title,
    h('p', { class: 'lede' }, 'Everything the engine knows about one contact: its events in the order received, how each was scored, and where each was delivered.'),
    form,
    body,
  );

  let seq = 0;
  async function load(wanted) {
    const mine = ++seq;
    clear(body, h('p', { class: 'hint' }, 'Loading…'));
    try {
      const data = await api('GET', `/contacts/${encodeURIComponent(wanted)}`);
      if (mine !== seq) return;
      render(data);
    } catch (e) {
      if (mine !== seq || (e instanceof ApiError && e.status === 401)) return;
      clear(
        body,
        e instanceof ApiError && e.status === 404
          ? h('p', { class: 'error-text', role: 'alert', 'data-field': 'not-found' }, `No contact with id ${wanted} is stored.`)
          : h('p', { class: 'error-text', role: 'alert' }, `The contact could not be loaded: ${e.message}`),
      );
    }
  }

  function render(data) {
    const events = data.events ?? [];
    const deliveries = data.deliveries ?? [];
    const byEvent = new Map();
    for (const d of deliveries) {
      if (!byEvent.has(d.id)) byEvent.set(d.id, []);
      byEvent.get(d.id).push(d);
    }
    const eventIds = new Set(events.map((e) => e.id));
    const orphans = deliveries.filter((d) => !eventIds.has(d.id));
    clear(
      body,
      h(
        'dl',
        { class: 'stats-cards' },
        h('div', { class: 'card' }, h('dt', {}, 'Contact id'), h('dd', { class: 'mono small-value', 'data-field': 'contact-id' }, String(data.contact_id))),
        h('div', { class: 'card' }, h('dt', {}, 'First seen'), h('dd', { class: 'small-value', 'data-field': 'first-seen' }, when(data.first_seen))),
        h('div', { class: 'card' }, h('dt', {}, 'Events'), h('dd', { 'data-field': 'event-count' }, String(events.length))),
        h('div', { class: 'card' }, h('dt', {}, 'Deliveries'), h('dd', { 'data-field': 'delivery-count' }, String(deliveries.length))),
      ),
      h('h2', {}, 'Events, in the order received'),
      events.length
        ? h('ol', { class: 'timeline' }, events.map((e, i) => eventItem(e, i, byEvent.get(e.id) ?? [])))
        : h('p', { class: 'hint' }, 'No event stored.'),
      orphans.length ? [h('h2', {}, 'Other deliveries'), deliveryList(orphans)] : null,
      jsonSection('Calls', data.calls),
      jsonSection('Outcomes', data.outcomes),
    );
  }

  if (id) load(id);
  else clear(body, h('p', { class: 'hint' }, 'Type a contact id, or follow a contact id anywhere in the console.'));
  return {
    el,
    destroy() {
      seq += 1;
    },
  };
}

function eventItem(e, index, deliveries) {
  const tier = e.tier ?? '';
  return h(
    'li',
    { class: 'event', dataset: { eventId: e.id } },
    h(
      'div',
      { class: 'event-head' },
      h('strong', {}, `#${index + 1}`),
      h('span', { class: 'small', 'data-field': 'event-time' }, when(e.received_at)),
      h('span', { class: `tier tier-${cssName(tier)}`, 'data-field': 'event-tier' }, tier || '—'),
      h('span', {}, 'score ', h('strong', { 'data-field': 'event-score' }, fmt(e.score))),
      h('span', { class: 'hint' }, 'rules ', h('code', { title: e.rules_version ?? '', 'data-field': 'event-rules-version' }, short(e.rules_version))),
      h('span', { class: 'hint mono small' }, [e.kind, e.type].filter(Boolean).join(' · ')),
      h('span', { class: 'hint mono small' }, e.id),
    ),
    reasonsList(e.reasons),
    h('h3', { class: 'sub' }, 'Deliveries'),
    deliveries.length ? deliveryList(deliveries) : h('p', { class: 'hint' }, 'No delivery: no destination selected this event.'),
  );
}

function reasonsList(reasons) {
  if (!reasons?.length) return h('p', { class: 'hint' }, 'No reasons.');
  return h(
    'ul',
    { class: 'reasons-list', 'data-field': 'event-reasons' },
    reasons.map((r) =>
      typeof r === 'string'
        ? h('li', {}, r)
        : h('li', {}, h('span', { class: 'points' }, `${r.points > 0 ? '+' : ''}${fmt(r.points)}`), ' ', r.reason ?? '', ' ', h('span', { class: 'rule' }, r.rule ?? '')),
    ),
  );
}

function deliveryList(deliveries) {
  return h(
    'div',
    { class: 'event-deliveries' },
    deliveries.map((d) =>
      h(
        'div',
        { class: 'event-delivery', dataset: { destination: d.destination ?? '', status: d.status ?? '' } },
        h(
          'p',
          { class: 'delivery-head' },
          h('code', { 'data-field': 'delivery-destination' }, d.destination ?? 'default'),
          ' ',
          h('span', { class: `status status-${cssName(d.status)}`, 'data-field': 'delivery-status' }, d.status ?? '—'),
          ' ',
          h('span', { class: 'hint' }, `${d.attempts?.length ?? 0} attempt${d.attempts?.length === 1 ? '' : 's'}`),
          ' ',
          h('a', { class: 'small', href: `#/deliveries?${new URLSearchParams({ status: d.status ?? 'dead', destination: d.destination ?? '' })}` }, 'in Deliveries'),
        ),
        attemptsTable(d.attempts ?? []),
      ),
    ),
  );
}

function jsonSection(label, items) {
  if (!items?.length) return null;
  return [
    h('h2', {}, label),
    h('ul', { class: 'plain json-list' }, items.map((x) => h('li', {}, h('pre', { class: 'response-body' }, JSON.stringify(x, null, 2))))),
  ];
}

function cssName(text) {
  return String(text ?? '').toLowerCase().replace(/[^a-z0-9_-]/g, '-');
}
