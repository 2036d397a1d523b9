// The leadscore console: a login form when the engine wants an admin token,
// then the pages behind a hash router (#/overview, #/playground,
// #/outcomes, #/backtest, #/deliveries, #/destinations, #/contact?id=… or
// #/contact?email=…). The token stays
// in sessionStorage only and is never written into the page.

import './style.css';
import { api, ApiError, consoleConfig, getToken, setToken, setUnauthorizedHandler } from './api.js';
import { h, clear, field } from './dom.js';
import { overviewPage } from './overview.js';
import { outcomesPage } from './outcomes.js';
import { playgroundPage } from './playground.js';
import { backtestPage } from './backtest.js';
import { deliveriesPage } from './deliveries.js';
import { destinationsPage } from './destinations.js';
import { contactPage } from './contact.js';
import { state as rules } from './rules-state.js';

const PAGES = [
  { key: 'overview', label: 'Overview', make: overviewPage },
  { key: 'outcomes', label: 'Outcomes', make: outcomesPage },
  { key: 'playground', label: 'Playground', make: playgroundPage },
  { key: 'backtest', label: 'Backtest', make: backtestPage },
  { key: 'deliveries', label: 'Deliveries', make: deliveriesPage },
  { key: 'destinations', label: 'Destinations', make: destinationsPage },
  { key: 'contact', label: 'Contact', make: contactPage },
];

const root = document.getElementById('app');
let config = null;
let page = null;
let shell = null;

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, query] = raw.split('?');
  const known = PAGES.find((p) => p.key === path);
  return { page: known ?? PAGES[0], params: new URLSearchParams(query ?? '') };
}

function showLogin(reason) {
  page?.destroy?.();
  page = null;
  shell = null;
  rules.ready = false;
  const input = h('input', { type: 'password', autocomplete: 'off', spellcheck: 'false', required: true, name: 'token' });
  const button = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
  const message = h('p', { class: 'error-text', role: 'alert' }, reason ?? '');
  const form = h(
    'form',
    {
      class: 'login-form',
      onsubmit: async (event) => {
        event.preventDefault();
        const token = input.value.trim();
        if (!token) return;
        button.disabled = true;
        message.textContent = '';
        try {
          await api('GET', '/rules', undefined, { token });
          input.value = '';
          setToken(token);
          showApp();
        } catch (e) {
          message.textContent =
            e instanceof ApiError && e.status === 401 ? 'That token was not accepted. Check it and try again.' : `Sign-in failed: ${e.message}`;
          input.select();
        } finally {
          button.disabled = false;
        }
      },
    },
    field('Admin token', input, 'The value of --admin-token (LEADSCORE_ADMIN_TOKEN). It is kept for this browser tab only.'),
    button,
    message,
  );
  clear(
    root,
    h(
      'main',
      { id: 'main', class: 'login', tabindex: '-1' },
      h('div', { class: 'login-card' }, h('h1', {}, h('span', { class: 'brand-mark', 'aria-hidden': 'true' }, '◆'), ' leadscore console'), form),
    ),
  );
  input.focus();
}

function showApp() {
  const nav = h(
    'nav',
    { 'aria-label': 'Pages' },
    h('ul', {}, PAGES.map((p) => h('li', {}, h('a', { href: `#/${p.key}`, dataset: { page: p.key } }, p.label)))),
  );
  const signOut = config.admin_token_required
    ? h('button', { type: 'button', class: 'secondary small', onclick: () => { setToken(''); showLogin('Signed out.'); } }, 'Sign out')
    : null;
  const main = h('main', { id: 'main', tabindex: '-1' });
  clear(
    root,
    h(
      'header',
      { class: 'top' },
      h('a', { class: 'brand', href: '#/overview' }, h('span', { class: 'brand-mark', 'aria-hidden': 'true' }, '◆'), ' leadscore'),
      nav,
      h('div', { class: 'top-right' }, config.allow_rule_edits ? h('span', { class: 'badge', title: 'started with --allow-rule-edits' }, 'rule edits on') : null, signOut),
    ),
    main,
  );
  shell = { nav, main };
  route(false);
}

function route(focus = true) {
  if (!shell) return;
  const { page: target, params } = parseHash();
  page?.destroy?.();
  for (const a of shell.nav.querySelectorAll('a')) {
    if (a.dataset.page === target.key) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  document.title = `${target.label} · leadscore console`;
  const ctx = {
    config,
    params,
    setParam(key, value) {
      params.set(key, value);
      history.replaceState(null, '', `#/${target.key}?${params}`);
    },
  };
  page = target.make(ctx);
  clear(shell.main, page.el);
  const heading = shell.main.querySelector('h1');
  if (focus && heading) {
    heading.tabIndex = -1;
    heading.focus();
  }
}

async function boot() {
  try {
    config = await consoleConfig();
  } catch (e) {
    clear(root, h('main', { id: 'main' }, h('p', { class: 'error-text', role: 'alert' }, `The engine cannot be reached: ${e.message}`)));
    return;
  }
  setUnauthorizedHandler(() => {
    setToken('');
    if (config.admin_token_required) showLogin('Your session has ended or the token was changed. Sign in again.');
  });
  window.addEventListener('hashchange', () => route(true));
  if (config.admin_token_required && !getToken()) showLogin();
  else showApp();
}

boot();
