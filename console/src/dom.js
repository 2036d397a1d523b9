// A tiny DOM builder: h('button', {class: 'x', onclick}, 'Text', child, …).
// Text is always set as text (never as HTML), so nothing the API returns can
// inject markup into the page.

export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'class') {
      el.className = value;
    } else if (key === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (key === 'value' || key === 'checked' || key === 'disabled' || key === 'selected') {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** A short form of a long hex digest. */
export function short(version) {
  return typeof version === 'string' ? version.slice(0, 12) : '—';
}

/** An RFC 3339 time as local date and time, or '—'. */
export function when(text) {
  if (!text) return '—';
  const d = new Date(text);
  return Number.isNaN(d.getTime()) ? String(text) : d.toLocaleString();
}

export function fmt(n) {
  if (n === null || n === undefined) return '—';
  if (typeof n === 'number' && !Number.isInteger(n)) return n.toFixed(2);
  return String(n);
}

let idCounter = 0;
export function uid(prefix) {
  idCounter += 1;
  return `${prefix}-${idCounter}`;
}

/** A labelled form field: returns [wrapper, control]. */
export function field(labelText, control, hint) {
  if (!control.id) control.id = uid('f');
  const hintEl = hint ? h('span', { class: 'hint', id: `${control.id}-hint` }, hint) : null;
  if (hintEl) control.setAttribute('aria-describedby', hintEl.id);
  return h('div', { class: 'field' }, h('label', { for: control.id }, labelText), control, hintEl);
}

/**
 * Keyboard-operable tabs (WAI-ARIA tabs pattern): arrow keys, Home and End
 * move between tabs, Enter/Space or focus selects. `onSelect(key)` is called
 * with the chosen tab's key.
 */
export function tabs({ label, items, selected, onSelect, panelId, extraClass }) {
  const list = h('div', { role: 'tablist', 'aria-label': label, class: `tabs ${extraClass ?? ''}` });
  const buttons = items.map((item) => {
    const key = typeof item === 'string' ? item : item.key;
    const text = typeof item === 'string' ? item : item.label;
    const b = h(
      'button',
      {
        type: 'button',
        role: 'tab',
        id: uid('tab'),
        'aria-selected': key === selected ? 'true' : 'false',
        'aria-controls': panelId,
        tabindex: key === selected ? '0' : '-1',
        dataset: { key },
        class: typeof item === 'object' && item.class ? item.class : undefined,
      },
      text,
    );
    b.addEventListener('click', () => select(key, true));
    return b;
  });
  function select(key, focus) {
    for (const b of buttons) {
      const on = b.dataset.key === key;
      b.setAttribute('aria-selected', on ? 'true' : 'false');
      b.tabIndex = on ? 0 : -1;
      if (on && focus) b.focus();
    }
    onSelect(key);
  }
  list.addEventListener('keydown', (e) => {
    const i = buttons.indexOf(document.activeElement);
    if (i < 0) return;
    let next = null;
    if (e.key === 'ArrowRight' || e.key === 'ArrowDown') next = (i + 1) % buttons.length;
    else if (e.key === 'ArrowLeft' || e.key === 'ArrowUp') next = (i - 1 + buttons.length) % buttons.length;
    else if (e.key === 'Home') next = 0;
    else if (e.key === 'End') next = buttons.length - 1;
    if (next !== null) {
      e.preventDefault();
      select(buttons[next].dataset.key, true);
    }
  });
  append(list, buttons);
  return { el: list, buttons, select: (key) => select(key, false) };
}

/** The console's address of a contact's page (the id URL-encoded, numbers and strings alike). */
export function contactHref(contactId) {
  return `#/contact?${new URLSearchParams({ id: String(contactId) })}`;
}

/** A contact id as a link to its contact page. */
export function contactLink(contactId, props = {}) {
  if (contactId === null || contactId === undefined || contactId === '') return '—';
  return h('a', { class: 'contact-link mono', href: contactHref(contactId), dataset: { contactLink: String(contactId) }, ...props }, String(contactId));
}

/** A rate (a fraction, 0–1) as a percentage with one decimal, or '—' for null. */
export function percent(rate) {
  if (rate === null || rate === undefined || !Number.isFinite(rate)) return '—';
  return `${(rate * 100).toFixed(1)} %`;
}

/** A rate with the counts it comes from: "12.8 % (60/468)"; '—' for null. */
export function rateText(rate, part, whole) {
  if (rate === null || rate === undefined || !Number.isFinite(rate)) return '—';
  return `${percent(rate)} (${part ?? 0}/${whole ?? 0})`;
}

/** Money as sent (rounded to cents by the engine), with thousands separators. */
export function money(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return '—';
  return value.toLocaleString('en-US', { maximumFractionDigits: 2 });
}
