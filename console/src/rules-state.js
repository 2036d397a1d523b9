// The rule files as loaded from the engine and as edited in the console.
// The Playground edits them; the Backtest page runs the edited set; Save and
// Delete write them back (with --allow-rule-edits).

import { api, ApiError } from './api.js';

export const TIERS = 'tiers.toml';

export const state = {
  /** name → text as in the engine's rules folder. */
  loaded: new Map(),
  /** name → text as edited (the candidate rule set). */
  edited: new Map(),
  /** GET /rules as last read. */
  status: null,
  ready: false,
};

const listeners = new Set();
export function onRulesChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}
export function notify(what) {
  for (const fn of listeners) fn(what);
}

export function isRuleName(name) {
  return /^[^/\\]+\.rhai$/.test(name) && !name.startsWith('.') && !name.includes('..');
}

/** Reads GET /rules and every file's text. Keeps edits to files that still exist. */
export async function loadRules() {
  const status = await api('GET', '/rules');
  const names = [...status.files];
  const texts = await Promise.all(
    [...names, TIERS].map(async (name) => {
      try {
        const file = await api('GET', `/rules/${encodeURIComponent(name)}`);
        return [name, file.content];
      } catch (e) {
        if (e instanceof ApiError && e.status === 404) return [name, null];
        throw e;
      }
    }),
  );
  const wasReady = state.ready;
  const loaded = new Map(texts.filter(([, text]) => text !== null));
  if (!wasReady) {
    state.edited = new Map(loaded);
  } else {
    // A file nobody edited follows the engine; an edited one keeps its edits.
    for (const [name, text] of loaded) {
      const before = state.loaded.get(name);
      if (!state.edited.has(name) || state.edited.get(name) === before) state.edited.set(name, text);
    }
  }
  state.loaded = loaded;
  state.status = status;
  state.ready = true;
  notify('loaded');
  return state;
}

/** The file names shown: rules in name order, then tiers.toml. */
export function fileNames() {
  const names = [...state.edited.keys()].filter((n) => n !== TIERS).sort();
  if (state.edited.has(TIERS)) names.push(TIERS);
  return names;
}

export function isChanged(name) {
  return state.loaded.get(name) !== state.edited.get(name);
}

export function changedCount() {
  const all = new Set([...state.loaded.keys(), ...state.edited.keys()]);
  return [...all].filter((n) => state.loaded.get(n) !== state.edited.get(n)).length;
}

/** The candidate of POST /backtest: every rule file, and tiers.toml when there is one. */
export function candidate() {
  const rules = {};
  for (const [name, text] of state.edited) if (name !== TIERS) rules[name] = text;
  const body = { rules };
  if (state.edited.has(TIERS)) body.tiers = state.edited.get(TIERS);
  return body;
}
