// Contact: one contact's timeline (GET /contacts/{id}): when it was first
// seen, its events in the order received with score, tier, rules version
// and reasons, and each event's deliveries per destination with their
// attempts; rescored events (SPEC 12) with their cause and previous result;
// the contact's calls and outcomes (SPEC 11). Reached from every contact id
// the console shows, or by typing an id in the search box (a number is
// looked up by value, else a string), or an email (anything with an '@':
// GET /contacts?email=, the latest event of each contact with that email).

import { api, ApiError } from './api.js';
import { h, clear, when, fmt, short, field, contactHref, contactLink, money } from './dom.js';
import { attemptsTable } from './attempts.js';

/** The console's address of the contacts with an email. */
function emailHref(email) {
  return `#/contact?${new URLSearchParams({ email })}`;
}

export function contactPage(ctx) {
  const id = ctx.params.get('id') ?? '';
  const email = id ? '' : (ctx.params.get('email') ?? '');
  const input = h('input', { type: 'search', name: 'contact-id', value: id || email, autocomplete: 'off', spellcheck: 'false', required: true, placeholder: 'e.g. 48213 or jane@acme.example' });
  const form = h(
    'form',
    {
      class: 'inline-form contact-search',
      role: 'search',
      onsubmit: (event) => {
        event.preventDefault();
        const wanted = input.value.trim();
        if (!wanted) return;
        const byEmail = wanted.includes('@');
        const target = byEmail ? emailHref(wanted) : contactHref(wanted);
        if (location.hash === target) (byEmail ? loadEmail : load)(wanted);
        else location.hash = target;
      },
    },
    field('Contact id or email', input),
    h('button', { type: 'submit', class: 'primary' }, 'Open contact'),
    h('p', { class: 'hint search-hint' }, 'The contact’s id as iClosed sends it, a number or a string; or its email (anything with an @).'),
  );
  const body = h('div', { class: 'contact-body', 'aria-live': 'polite' });
  const title = h('h1', { id: 'ct-title' }, id ? `Contact ${id}` : email ? `Contacts with email ${email}` : 'Contact');
  const el = h(
    'section',
    { class: 'page contact', 'aria-labelledby': 'ct-title' },
    title,
    h('p', { class: 'lede' }, 'Everything the engine knows about one contact: its events in the order received, how each was scored, where each was delivered, and its calls and outcomes.'),
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

  async function loadEmail(wanted) {
    const mine = ++seq;
    clear(body, h('p', { class: 'hint' }, 'Looking up the email…'));
    let found;
    try {
      found = (await api('GET', `/contacts?${new URLSearchParams({ email: wanted, limit: '50' })}`))?.contacts ?? [];
    } catch (e) {
      if (mine !== seq || (e instanceof ApiError && e.status === 401)) return;
      clear(body, h('p', { class: 'error-text', role: 'alert' }, `The contacts could not be looked up: ${e.message}`));
      return;
    }
    if (mine !== seq) return;
    if (!found.length) {
      clear(body, h('p', { class: 'error-text', role: 'alert', 'data-field': 'not-found' }, `No contact with email ${wanted} is stored.`));
      return;
    }
    const list = h(
      'div',
      { class: 'email-matches' },
      h('p', { class: 'hint', 'data-field': 'email-match-count' }, `${found.length} contact${found.length === 1 ? '' : 's'} with email ${wanted}${found.length === 1 ? ':' : ', latest event first:'}`),
      h(
        'ul',
        { class: 'plain email-list', 'data-field': 'email-matches' },
        found.map((c) =>
          h(
            'li',
            { dataset: { contact: String(c.contact_id) } },
            contactLink(c.contact_id),
            ' ',
            h('span', { class: `tier tier-${cssName(c.tier)}` }, c.tier ?? '—'),
            ` score ${scoreText(c.score)}, latest event ${when(c.received_at)}`,
          ),
        ),
      ),
    );
    if (found.length > 1) {
      clear(body, list);
      return;
    }
    // One contact: its timeline at once.
    clear(body, list, h('p', { class: 'hint' }, 'Loading…'));
    try {
      const data = await api('GET', `/contacts/${encodeURIComponent(String(found[0].contact_id))}`);
      if (mine !== seq) return;
      title.textContent = `Contact ${found[0].contact_id}`;
      render(data, list);
    } catch (e) {
      if (mine !== seq || (e instanceof ApiError && e.status === 401)) return;
      clear(body, list, h('p', { class: 'error-text', role: 'alert' }, `The contact could not be loaded: ${e.message}`));
    }
  }

  function render(data, before = null) {
    const events = data.events ?? [];
    const deliveries = data.deliveries ?? [];
    const byEvent = new Map();
    for (const d of deliveries) {
      if (!byEvent.has(d.id)) byEvent.set(d.id, []);
      byEvent.get(d.id).push(d);
    }
    const eventIds = new Set(events.map((e) => e.id));
    const orphans = deliveries.filter((d) => !eventIds.has(d.id));
    const rescored = events.filter(isRescored).length;
    clear(
      body,
      before,
      h(
        'dl',
        { class: 'stats-cards' },
        h('div', { class: 'card' }, h('dt', {}, 'Contact id'), h('dd', { class: 'mono small-value', 'data-field': 'contact-id' }, String(data.contact_id))),
        h('div', { class: 'card' }, h('dt', {}, 'First seen'), h('dd', { class: 'small-value', 'data-field': 'first-seen' }, when(data.first_seen))),
        h('div', { class: 'card' }, h('dt', {}, 'Events'), h('dd', { 'data-field': 'event-count' }, String(events.length))),
        h('div', { class: 'card' }, h('dt', {}, 'Rescored'), h('dd', { 'data-field': 'rescored-count' }, String(rescored))),
        h('div', { class: 'card' }, h('dt', {}, 'Deliveries'), h('dd', { 'data-field': 'delivery-count' }, String(deliveries.length))),
        h('div', { class: 'card' }, h('dt', {}, 'Calls'), h('dd', { 'data-field': 'call-count' }, String(data.calls?.length ?? 0))),
        h('div', { class: 'card' }, h('dt', {}, 'Outcomes'), h('dd', { 'data-field': 'outcome-count' }, String(data.outcomes?.length ?? 0))),
      ),
      h('h2', {}, 'Events, in the order received'),
      events.length
        ? h('ol', { class: 'timeline' }, events.map((e, i) => eventItem(e, i, byEvent.get(e.id) ?? [])))
        : h('p', { class: 'hint' }, 'No event stored.'),
      orphans.length ? [h('h2', {}, 'Other deliveries'), deliveryList(orphans)] : null,
      h('h2', {}, 'Calls'),
      callsTable(data.calls ?? []),
      h('h2', {}, 'Outcomes'),
      outcomesTable(data.outcomes ?? []),
    );
  }

  if (id) load(id);
  else if (email) loadEmail(email);
  else clear(body, h('p', { class: 'hint' }, 'Type a contact id or an email, or follow a contact id anywhere in the console.'));
  return {
    el,
    destroy() {
      seq += 1;
    },
  };
}

/** A score as stored: a whole number as is, a fraction with at most two decimals ("62.5"). */
function scoreText(score) {
  return typeof score === 'number' && Number.isFinite(score) ? String(Number(score.toFixed(2))) : fmt(score);
}

function isRescored(e) {
  return e.type === 'contact.rescored';
}

const CAUSES = {
  rules: 'the rules changed',
  schedule: 'the periodic rescore',
  call: 'a call or outcome arrived',
  manual: 'a rescore started by hand',
};

function eventItem(e, index, deliveries) {
  const tier = e.tier ?? '';
  const rescored = isRescored(e);
  return h(
    'li',
    { class: `event${rescored ? ' rescored' : ''}`, dataset: { eventId: e.id, type: e.type ?? '' } },
    h(
      'div',
      { class: 'event-head' },
      h('strong', {}, `#${index + 1}`),
      rescored ? h('span', { class: 'badge rescored-badge', 'data-field': 'event-rescored' }, 'rescored') : null,
      h('span', { class: 'small', 'data-field': 'event-time' }, when(e.received_at)),
      h('span', { class: `tier tier-${cssName(tier)}`, 'data-field': 'event-tier' }, tier || '—'),
      h('span', {}, 'score ', h('strong', { 'data-field': 'event-score' }, scoreText(e.score))),
      h('span', { class: 'hint' }, 'rules ', h('code', { title: e.rules_version ?? '', 'data-field': 'event-rules-version' }, short(e.rules_version))),
      h('span', { class: 'hint mono small' }, [e.kind, e.type].filter(Boolean).join(' · ')),
      h('span', { class: 'hint mono small' }, e.id),
    ),
    rescored ? rescoredNote(e) : null,
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

/** Why a rescored event was made, and what it replaced. */
function rescoredNote(e) {
  const cause = typeof e.cause === 'string' ? e.cause : null;
  const p = e.previous && typeof e.previous === 'object' ? e.previous : null;
  return h(
    'p',
    { class: 'rescored-note' },
    'Rescored without a new webhook',
    cause ? [': ', h('strong', { 'data-field': 'event-cause' }, cause), CAUSES[cause] ? ` (${CAUSES[cause]})` : ''] : '',
    '.',
    p
      ? [
          ' Before: score ',
          h('strong', { 'data-field': 'previous-score' }, scoreText(p.score)),
          ' ',
          h('span', { class: `tier tier-${cssName(p.tier)}`, 'data-field': 'previous-tier' }, p.tier ?? '—'),
          ' (rules ',
          h('code', { title: p.rules_version ?? '' }, short(p.rules_version)),
          p.scored_at ? `, scored ${when(p.scored_at)}` : '',
          ').',
        ]
      : null,
  );
}

function callsTable(calls) {
  if (!calls.length) return h('p', { class: 'hint', 'data-field': 'no-calls' }, 'No call hook is linked to this contact.');
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { class: 'calls-table', 'data-field': 'calls' },
      h('caption', {}, 'Call hooks (booked, rescheduled, canceled), oldest first.'),
      h('thead', {}, h('tr', {}, ['Received', 'Status', 'Call starts', 'Event type', 'Call id', 'Hook id'].map((c) => h('th', { scope: 'col' }, c)))),
      h(
        'tbody',
        {},
        calls.map((c) =>
          h(
            'tr',
            { dataset: { id: c.id, callId: c.call_id ?? '' } },
            h('td', { class: 'small' }, when(c.received_at)),
            h('td', { 'data-field': 'call-status' }, h('span', { class: `call-status call-${cssName(c.status)}` }, c.status ?? '—')),
            h('td', { class: 'small', 'data-field': 'call-start' }, when(c.start_time)),
            h('td', { 'data-field': 'call-event-type' }, c.event_type ?? '—'),
            h('td', { class: 'mono small wrap', 'data-field': 'call-id' }, c.call_id ?? '—'),
            h('td', { class: 'mono small wrap' }, c.id),
          ),
        ),
      ),
    ),
  );
}

function outcomesTable(outcomes) {
  if (!outcomes.length) return h('p', { class: 'hint', 'data-field': 'no-outcomes' }, 'No outcome hook is linked to this contact.');
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { class: 'outcomes-table', 'data-field': 'outcomes' },
      h('caption', {}, 'Outcome hooks, oldest first. A SALE or PARTIAL_SALE is a sale; its revenue is the deal value.'),
      h('thead', {}, h('tr', {}, ['Received', 'Outcome', 'Sale', 'Revenue', 'Outcome id', 'Hook id'].map((c, i) => h('th', { scope: 'col', class: i === 3 ? 'num' : undefined }, c)))),
      h(
        'tbody',
        {},
        outcomes.map((o) =>
          h(
            'tr',
            { dataset: { id: o.id, sale: String(Boolean(o.sale)) }, class: o.sale ? 'sale' : undefined },
            h('td', { class: 'small' }, when(o.received_at)),
            h('td', { 'data-field': 'call-outcome' }, o.call_outcome ?? '—'),
            h('td', { 'data-field': 'sale' }, o.sale ? 'yes' : 'no'),
            h('td', { class: 'num', 'data-field': 'revenue' }, money(o.revenue)),
            h('td', { class: 'mono small wrap', 'data-field': 'outcome-id' }, o.outcome_id ?? '—'),
            h('td', { class: 'mono small wrap' }, o.id),
          ),
        ),
      ),
    ),
  );
}

function cssName(text) {
  return String(text ?? '').toLowerCase().replace(/[^a-z0-9_-]/g, '-');
}
