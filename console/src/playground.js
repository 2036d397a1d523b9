// Playground: the rule files in an editor, a contact (a stored one or a
// pasted payload), and the loaded and edited rules' results side by side,
// recomputed ≈300 ms after each edit through POST /backtest with `contacts`.

import { api, ApiError } from './api.js';
import { h, clear, field, short, when, fmt, tabs as makeTabs, uid, contactLink } from './dom.js';
import { createState, createView, withDiagnostics } from './editor.js';
import { rescorePanel } from './rescore.js';
import {
  state as rules,
  loadRules,
  fileNames,
  isChanged,
  candidate,
  isRuleName,
  notify,
  TIERS,
} from './rules-state.js';

const DEBOUNCE_MS = 300;
// Lint reads the stored contacts of the last 30 days: less often than scoring.
const LINT_DEBOUNCE_MS = 1500;

export function playgroundPage(ctx) {
  const editStates = new Map(); // name → EditorState
  let current = null;
  let shown = null; // the file whose state the view holds
  let timer = null;
  let seq = 0;
  let inflight = null;
  let lastErrors = []; // compile errors of the edited set
  let lintTimer = null;
  let lintSeq = 0;
  let lintInflight = null;

  const panelId = uid('editor-panel');
  const tabsBox = h('div', { class: 'file-tabs' });
  const editorBox = h('div', { class: 'editor', id: panelId, role: 'tabpanel' });
  const view = createView(editorBox);
  const compileStatus = h('div', { class: 'compile-status', role: 'status', 'aria-live': 'polite' });
  const saveMessage = h('div', { class: 'save-message', role: 'status', 'aria-live': 'polite' });
  // After a save: "Rescore now", so that stored contacts get the new rules (SPEC 12).
  const rescoreBox = h('div', { class: 'after-save' });
  let rescore = null;

  const revertBtn = h('button', { type: 'button', class: 'secondary', onclick: revert }, 'Revert file');
  const saveBtn = h('button', { type: 'button', class: 'primary', onclick: save }, 'Save to rules folder');
  const deleteBtn = h('button', { type: 'button', class: 'danger', onclick: remove }, 'Delete file');
  const actions = h('div', { class: 'actions' }, revertBtn, ctx.config.allow_rule_edits ? [saveBtn, deleteBtn] : null);

  const newName = h('input', { type: 'text', placeholder: '90-my-rule.rhai', spellcheck: 'false', autocomplete: 'off' });
  const newForm = h(
    'form',
    { class: 'new-file inline-form', onsubmit: addFile },
    field('New rule file', newName),
    h('button', { type: 'submit', class: 'secondary' }, 'Add'),
  );

  const contactSelect = h('select', { onchange: pickStored }, h('option', { value: '' }, 'Loading…'));
  const contactText = h('textarea', {
    rows: '10',
    spellcheck: 'false',
    class: 'mono',
    oninput: () => schedule(),
    placeholder: '{"id": 1, "email": "…", "questionsAndAnswers": {…}}',
  });
  const contactNote = h('div', { class: 'hint', role: 'status', 'aria-live': 'polite' });
  const contactOpen = h('p', { class: 'contact-open small', 'data-field': 'picked-contact' });
  const results = h('div', { class: 'results', 'aria-live': 'polite', 'aria-busy': 'false' });
  const traceBox = h('div', { class: 'trace', 'aria-live': 'polite' });
  const lintBox = h('div', { class: 'lint-findings', role: 'status', 'aria-live': 'polite' }, h('p', { class: 'hint' }, 'Checking the rules…'));

  const el = h(
    'section',
    { class: 'page playground', 'aria-labelledby': 'pg-title' },
    h('h1', { id: 'pg-title' }, 'Playground'),
    h(
      'p',
      { class: 'lede' },
      'Edit the rules and see what they make of a contact, next to what the loaded rules make of it. Nothing is saved until you save.',
    ),
    h(
      'div',
      { class: 'pg-grid' },
      h(
        'div',
        { class: 'pg-editor' },
        h('h2', { class: 'visually-hidden' }, 'Rule files'),
        tabsBox,
        editorBox,
        compileStatus,
        h('section', { class: 'lint', 'aria-labelledby': 'pg-lint-title' }, h('h2', { id: 'pg-lint-title' }, 'Lint'), lintBox),
        actions,
        saveMessage,
        rescoreBox,
        newForm,
      ),
      h(
        'div',
        { class: 'pg-side' },
        h('h2', {}, 'Contact'),
        field('Stored contact', contactSelect, 'The newest contacts the engine received.'),
        contactOpen,
        field('Contact payload (JSON)', contactText),
        contactNote,
        h('h2', {}, 'Results'),
        results,
        h('h2', {}, 'Trace of the edited rules'),
        h('p', { class: 'hint' }, 'Each rule file in order: what it did, and every question or UTM value it looked up. A rule that did not fire shows what it looked for.'),
        traceBox,
      ),
    ),
  );

  function stateFor(name) {
    if (!editStates.has(name)) {
      editStates.set(
        name,
        createState(name, rules.edited.get(name) ?? '', (text) => {
          rules.edited.set(name, text);
          markTabs();
          notify('edited');
          schedule();
        }),
      );
    }
    return editStates.get(name);
  }

  function renderTabs() {
    const names = fileNames();
    if (shown && editStates.has(shown)) editStates.set(shown, view.state);
    // Drop editor states whose text no longer matches (changed on the engine).
    for (const [name, st] of editStates) {
      if (!rules.edited.has(name) || st.doc.toString() !== rules.edited.get(name)) editStates.delete(name);
    }
    if (!names.includes(current)) current = names[0] ?? null;
    const t = makeTabs({
      label: 'Rule files',
      items: names,
      selected: current,
      panelId,
      extraClass: 'files',
      onSelect: (name) => show(name),
    });
    clear(tabsBox, t.el);
    markTabs();
    if (current) show(current);
  }

  function markTabs() {
    const withErrors = new Set(lastErrors.map((e) => e.file));
    for (const b of tabsBox.querySelectorAll('[role=tab]')) {
      const name = b.dataset.key;
      const marks = [];
      if (isChanged(name)) marks.push('edited');
      if (withErrors.has(name)) marks.push('has errors');
      b.textContent = name + (isChanged(name) ? ' •' : '') + (withErrors.has(name) ? ' ⚠' : '');
      b.classList.toggle('changed', isChanged(name));
      b.classList.toggle('has-error', withErrors.has(name));
      b.setAttribute('aria-label', marks.length ? `${name} (${marks.join(', ')})` : name);
    }
  }

  function show(name) {
    if (shown && editStates.has(shown)) editStates.set(shown, view.state);
    current = name;
    shown = name;
    view.setState(stateFor(name));
    editorBox.setAttribute('aria-label', `Editor: ${name}`);
    const isNew = !rules.loaded.has(name);
    revertBtn.disabled = !isChanged(name) || isNew;
    deleteBtn.textContent = isNew ? 'Discard new file' : 'Delete file';
    saveBtn.textContent = `Save ${name}`;
  }

  function applyErrors(errors) {
    lastErrors = errors;
    if (shown && editStates.has(shown)) editStates.set(shown, view.state);
    for (const name of new Set([...editStates.keys(), ...errors.map((e) => e.file)])) {
      if (!rules.edited.has(name)) continue;
      const mine = errors.filter((e) => e.file === name);
      const updated = withDiagnostics(stateFor(name), mine);
      editStates.set(name, updated);
      if (name === shown) view.setState(updated);
    }
    markTabs();
    if (!errors.length) {
      clear(compileStatus, h('span', { class: 'ok' }, 'The edited rules compile.'));
      return;
    }
    clear(
      compileStatus,
      h('p', { class: 'error-text' }, `The edited rules do not compile (${errors.length} error${errors.length > 1 ? 's' : ''}):`),
      h(
        'ul',
        { class: 'compile-errors' },
        errors.map((e) =>
          h(
            'li',
            {},
            h(
              'button',
              { type: 'button', class: 'link', onclick: () => jumpTo(e) },
              `${e.file}:${e.line}:${e.column}`,
            ),
            ` ${e.message}`,
          ),
        ),
      ),
    );
  }

  function jumpTo(e) {
    const tab = tabsBox.querySelector(`[role=tab][data-key="${CSS.escape(e.file)}"]`);
    if (tab) tab.click();
    const doc = view.state.doc;
    const line = doc.line(Math.min(Math.max(e.line || 1, 1), doc.lines));
    view.dispatch({ selection: { anchor: Math.min(line.from + Math.max((e.column || 1) - 1, 0), line.to) }, scrollIntoView: true });
    view.focus();
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(run, DEBOUNCE_MS);
    clearTimeout(lintTimer);
    lintTimer = setTimeout(lint, LINT_DEBOUNCE_MS);
  }

  async function lint() {
    const mine = ++lintSeq;
    lintInflight?.abort();
    lintInflight = new AbortController();
    try {
      const report = await api('POST', '/lint', candidate(), { signal: lintInflight.signal });
      if (mine !== lintSeq) return;
      renderLint(report);
    } catch (e) {
      if (e.name === 'AbortError' || mine !== lintSeq) return;
      if (e instanceof ApiError && e.status === 422) clear(lintBox, h('p', { class: 'hint' }, 'Lint runs once the edited rules compile.'));
      else if (!(e instanceof ApiError && e.status === 401)) clear(lintBox, h('p', { class: 'error-text' }, `Lint failed: ${e.message}`));
    }
  }

  function renderLint(report) {
    const against = report.contacts == null ? 'no store' : `${report.contacts} stored contact${report.contacts === 1 ? '' : 's'} of the last 30 days`;
    if (!report.findings.length) {
      clear(lintBox, h('p', { class: 'ok' }, `No findings (checked against ${against}).`));
      return;
    }
    clear(
      lintBox,
      h('p', { class: 'hint' }, `${report.findings.length} finding${report.findings.length === 1 ? '' : 's'}, checked against ${against}:`),
      h(
        'ul',
        { class: 'findings' },
        report.findings.map((f) =>
          h(
            'li',
            { 'data-kind': f.kind },
            f.line && rules.edited.has(f.file)
              ? h('button', { type: 'button', class: 'link', onclick: () => jumpTo({ file: f.file, line: f.line, column: 1 }) }, `${f.file}:${f.line}`)
              : h('span', { class: 'rule' }, f.file),
            ` ${f.message}`,
          ),
        ),
      ),
    );
  }

  function parseContact() {
    const text = contactText.value.trim();
    if (!text) return { error: 'Pick a stored contact or paste a payload.' };
    try {
      let value = JSON.parse(text);
      if (Array.isArray(value)) value = value[0];
      if (!value || typeof value !== 'object' || Array.isArray(value)) return { error: 'The payload must be a JSON object (or an array of them).' };
      if (value.id === undefined || value.id === null) return { error: 'The contact needs an "id".' };
      return { contact: value };
    } catch (e) {
      return { error: `Not valid JSON: ${e.message}` };
    }
  }

  async function run() {
    const parsed = parseContact();
    if (parsed.error) {
      contactNote.textContent = parsed.error;
      return;
    }
    contactNote.textContent = '';
    const mine = ++seq;
    inflight?.abort();
    inflight = new AbortController();
    results.setAttribute('aria-busy', 'true');
    results.classList.add('busy');
    try {
      const report = await api('POST', '/backtest', { ...candidate(), contacts: [parsed.contact], trace: true }, { signal: inflight.signal });
      if (mine !== seq) return;
      applyErrors([]);
      const pair = report.results?.[0];
      if (!pair) throw new ApiError(200, { error: 'the backtest report has no results' });
      renderResults(pair, report);
    } catch (e) {
      if (e.name === 'AbortError' || mine !== seq) return;
      if (e instanceof ApiError && e.status === 422 && Array.isArray(e.body.errors)) {
        applyErrors(e.body.errors);
        results.querySelector('[data-side=candidate]')?.classList.add('stale');
      } else if (e instanceof ApiError && e.status === 429) {
        const wait = Math.min(Number(e.retryAfter) || 1, 5);
        contactNote.textContent = `A backtest is running; trying again in ${wait} s.`;
        timer = setTimeout(run, wait * 1000);
      } else if (e instanceof ApiError && e.status !== 401) {
        clear(results, h('p', { class: 'error-text', role: 'alert' }, `Scoring failed: ${e.message}`));
      }
    } finally {
      if (mine === seq) {
        results.setAttribute('aria-busy', 'false');
        results.classList.remove('busy');
      }
    }
  }

  function renderResults(pair, report) {
    const changed = pair.baseline.tier !== pair.candidate.tier;
    clear(
      results,
      changed
        ? h('p', { class: 'tier-change', 'data-field': 'tier-change' }, `Tier changes: ${pair.baseline.tier} → ${pair.candidate.tier}`)
        : h('p', { class: 'hint' }, pair.baseline.score === pair.candidate.score ? 'The edits change nothing for this contact.' : 'Same tier, different score.'),
      h(
        'div',
        { class: 'side-by-side' },
        scoredCard('Loaded rules', 'baseline', pair.baseline, report.baseline?.rules_version),
        scoredCard('Edited rules', 'candidate', pair.candidate, report.candidate?.rules_version, pair.baseline),
      ),
    );
    clear(traceBox, traceTable(pair.candidate.trace ?? []));
  }

  async function pickStored() {
    const option = contactSelect.selectedOptions[0];
    if (!option || !option.value) return;
    const stored = storedContacts[Number(option.value)];
    clear(contactOpen, stored ? ['Contact page: ', contactLink(stored.contact_id, { 'aria-label': `Open the page of contact ${stored.contact_id}` })] : null);
    if (stored) {
      contactText.value = JSON.stringify(stored.contact, null, 2);
      schedule();
    }
  }

  let storedContacts = [];
  async function loadContacts() {
    try {
      const data = await api('GET', '/contacts?limit=25');
      storedContacts = data.contacts ?? [];
      clear(
        contactSelect,
        h('option', { value: '' }, storedContacts.length ? 'Choose a contact…' : 'No stored contacts yet'),
        storedContacts.map((c, i) =>
          h('option', { value: String(i) }, `#${c.contact_id} · ${c.tier ?? '?'} ${fmt(c.score)} · ${when(c.received_at)}`),
        ),
      );
      if (storedContacts.length && !contactText.value.trim()) {
        contactSelect.value = '0';
        pickStored();
      }
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return;
      clear(contactSelect, h('option', { value: '' }, 'Stored contacts unavailable'));
      contactNote.textContent = `Stored contacts could not be listed (${e.message}); paste a payload instead.`;
    }
  }

  function revert() {
    if (!current || !rules.loaded.has(current)) return;
    const text = rules.loaded.get(current);
    view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: text } });
  }

  async function save() {
    if (!current) return;
    const name = current;
    saveBtn.disabled = true;
    saveMessage.textContent = `Saving ${name}…`;
    try {
      const answer = await api('PUT', `/rules/${encodeURIComponent(name)}`, rules.edited.get(name) ?? '');
      rules.loaded.set(name, rules.edited.get(name));
      saveMessage.textContent = `Saved ${name}. Rules version ${short(answer.rules_version)} is live.`;
      offerRescore();
      await loadRules();
      renderTabs();
      schedule();
    } catch (e) {
      if (e instanceof ApiError && e.status === 422 && Array.isArray(e.body.errors)) {
        applyErrors(e.body.errors);
        saveMessage.textContent = `Not saved: ${e.message}`;
      } else if (!(e instanceof ApiError && e.status === 401)) {
        saveMessage.textContent = `Not saved: ${e.message}`;
      }
    } finally {
      saveBtn.disabled = false;
    }
  }

  function offerRescore() {
    if (rescore) {
      rescore.refresh();
      return;
    }
    rescore = rescorePanel({ compact: true });
    clear(rescoreBox, rescore.el);
  }

  async function remove() {
    if (!current) return;
    const name = current;
    if (!rules.loaded.has(name)) {
      rules.edited.delete(name);
      editStates.delete(name);
      current = null;
      shown = null;
      renderTabs();
      notify('edited');
      schedule();
      return;
    }
    if (!window.confirm(`Delete ${name} from the engine's rules folder? The change is live at once.`)) return;
    saveMessage.textContent = `Deleting ${name}…`;
    try {
      const answer = await api('DELETE', `/rules/${encodeURIComponent(name)}`);
      rules.edited.delete(name);
      editStates.delete(name);
      current = null;
      shown = null;
      saveMessage.textContent = `Deleted ${name}. Rules version ${short(answer.rules_version)} is live.`;
      offerRescore();
      await loadRules();
      renderTabs();
      schedule();
    } catch (e) {
      if (e instanceof ApiError && e.status === 422 && Array.isArray(e.body.errors)) applyErrors(e.body.errors);
      if (!(e instanceof ApiError && e.status === 401)) saveMessage.textContent = `Not deleted: ${e.message}`;
    }
  }

  function addFile(event) {
    event.preventDefault();
    const name = newName.value.trim();
    if (!isRuleName(name)) {
      saveMessage.textContent = 'A rule file name ends in .rhai and has no "/", "\\" or "..", e.g. 90-my-rule.rhai.';
      newName.focus();
      return;
    }
    if (rules.edited.has(name)) {
      saveMessage.textContent = `${name} exists already.`;
      return;
    }
    rules.edited.set(name, `// ${name}\n`);
    newName.value = '';
    current = name;
    renderTabs();
    notify('edited');
    view.focus();
  }

  async function init() {
    clear(results, h('p', { class: 'hint' }, 'Loading the rules…'));
    try {
      if (!rules.ready) await loadRules();
      renderTabs();
      await loadContacts();
      schedule();
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 401)) clear(results, h('p', { class: 'error-text', role: 'alert' }, `The rules could not be loaded: ${e.message}`));
    }
  }
  init();

  return {
    el,
    destroy() {
      clearTimeout(timer);
      clearTimeout(lintTimer);
      inflight?.abort();
      lintInflight?.abort();
      rescore?.destroy();
      view.destroy();
    },
  };
}

function scoredCard(title, side, scored, version, other) {
  const tierChanged = other && other.tier !== scored.tier;
  const scoreChanged = other && other.score !== scored.score;
  return h(
    'article',
    { class: 'scored', 'data-side': side, 'aria-label': title },
    h('h3', {}, title, version ? h('span', { class: 'version', title: version }, ` ${short(version)}`) : null),
    h(
      'dl',
      { class: 'summary' },
      h('div', {}, h('dt', {}, 'Score'), h('dd', { 'data-field': 'score', class: scoreChanged ? 'diff' : '' }, fmt(scored.score))),
      h(
        'div',
        {},
        h('dt', {}, 'Tier'),
        h('dd', {}, h('span', { class: `tier tier-${cssName(scored.tier)} ${tierChanged ? 'diff' : ''}`, 'data-field': 'tier' }, scored.tier)),
      ),
      h('div', {}, h('dt', {}, 'Disqualified'), h('dd', { 'data-field': 'disqualified' }, scored.disqualified ? 'yes' : 'no')),
    ),
    h('h4', {}, 'Reasons'),
    scored.reasons?.length
      ? h(
          'table',
          { class: 'reasons' },
          h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Points'), h('th', { scope: 'col' }, 'Reason'), h('th', { scope: 'col' }, 'Rule'))),
          h(
            'tbody',
            {},
            scored.reasons.map((r) =>
              h('tr', {}, h('td', { class: r.points < 0 ? 'neg num' : 'num' }, r.points > 0 ? `+${fmt(r.points)}` : fmt(r.points)), h('td', {}, r.reason), h('td', { class: 'rule' }, r.rule)),
            ),
          ),
        )
      : h('p', { class: 'hint' }, 'No points.'),
    scored.disqualifications?.length
      ? [h('h4', {}, 'Disqualifications'), h('ul', { class: 'dq' }, scored.disqualifications.map((d) => h('li', {}, `${d.reason} `, h('span', { class: 'rule' }, `(${d.rule})`))))]
      : null,
    scored.errors?.length
      ? [h('h4', {}, 'Rule errors'), h('ul', { class: 'rule-errors' }, scored.errors.map((d) => h('li', {}, h('span', { class: 'rule' }, `${d.rule}: `), d.error)))]
      : null,
    scored.tags?.length ? h('p', { class: 'tags' }, 'Tags: ', scored.tags.map((t) => h('span', { class: 'tag' }, t))) : null,
  );
}

/** The trace of one result: a row per rule file, its lookups beneath. */
function traceTable(trace) {
  if (!trace.length) return h('p', { class: 'hint' }, 'No rule files.');
  return h(
    'ol',
    { class: 'trace-rules' },
    trace.map((t) =>
      h(
        'li',
        { 'data-rule': t.rule, 'data-status': t.status, class: `trace-rule status-${cssName(t.status)}` },
        h(
          'div',
          { class: 'trace-head' },
          h('span', { class: 'rule' }, t.rule),
          h('span', { class: 'status', 'data-field': 'status' }, t.status),
          t.points ? h('span', { class: t.points < 0 ? 'neg num' : 'num' }, t.points > 0 ? `+${fmt(t.points)}` : fmt(t.points)) : null,
          h('span', { class: 'micros' }, `${fmt(Math.round(t.micros * 10) / 10)} µs`),
        ),
        whyNot(t),
        t.lookups.length ? h('ul', { class: 'lookups' }, t.lookups.map(lookupLine)) : null,
      ),
    ),
  );
}

/** "Why didn't this rule fire?": the questions and values it looked for that this contact does not have. */
function whyNot(t) {
  if (t.status !== 'no effect') return null;
  const missed = t.lookups.filter((l) => l.how === 'none');
  if (!missed.length) return h('p', { class: 'why-not hint' }, 'It ran to the end without adding points, disqualifying or tagging: its conditions did not hold.');
  return h(
    'p',
    { class: 'why-not', 'data-field': 'why-not' },
    'Why it did not fire: ',
    missed.map((l, i) => [
      i ? '; ' : '',
      l.fn === 'answer' || l.fn === 'has_answer'
        ? `it looked for the question “${l.arg}” and no question of this contact matched`
        : `it read ${l.fn}(“${l.arg}”) and this contact has no such value`,
    ]),
    '.',
  );
}

function lookupLine(l) {
  const found = l.how === 'none' ? 'nothing matched' : l.fn.endsWith('utm') ? `read ${l.matched}` : `matched “${l.matched}” (${l.how})`;
  return h(
    'li',
    { class: l.how === 'none' ? 'lookup missed' : 'lookup', 'data-how': l.how },
    h('code', {}, `${l.fn}("${l.arg}")`),
    ` ${found} → `,
    h('code', {}, JSON.stringify(l.result)),
  );
}

export function cssName(text) {
  return String(text ?? '').toLowerCase().replace(/[^a-z0-9-]/g, '-');
}
