// Rescoring (SPEC 12): the running job's progress, the last finished job
// (contacts changed and pushed), the recent jobs, and "Rescore now"
// (POST /rescore with {}: the engine's default window). Shown on the
// Overview, and after a rule file is saved in the Playground (compact: no
// job list). While a job runs, GET /rescore is polled every second.

import { api, ApiError } from './api.js';
import { h, clear, when } from './dom.js';

const POLL_MS = 1000;

/**
 * `rescorePanel({compact})` → `{el, refresh(), destroy()}`. `compact`
 * leaves out the recent jobs table.
 */
export function rescorePanel({ compact = false } = {}) {
  let timer = null;
  let seq = 0;
  let gone = false;
  const button = h('button', { type: 'button', class: compact ? 'secondary' : 'primary', onclick: start }, 'Rescore now');
  const message = h('p', { class: 'message rescore-message', role: 'status', 'aria-live': 'polite', 'data-field': 'rescore-message' });
  const status = h('div', { class: 'rescore-status', 'aria-live': 'polite' });
  const el = h(
    'div',
    { class: `rescore-panel${compact ? ' compact' : ''}`, 'data-field': 'rescore' },
    h(
      'div',
      { class: 'actions' },
      button,
      h(
        'span',
        { class: 'hint' },
        compact
          ? 'Score the stored contacts again with the rules now live, so that the CRM gets every changed score and tier.'
          : 'Scores the latest event of every contact first seen in the last 30 days with the loaded rules, and pushes the contacts whose score or tier changed.',
      ),
    ),
    message,
    status,
  );

  async function refresh() {
    const mine = ++seq;
    clearTimeout(timer);
    let jobs;
    try {
      jobs = (await api('GET', '/rescore'))?.jobs ?? [];
    } catch (e) {
      if (gone || mine !== seq || (e instanceof ApiError && e.status === 401)) return;
      clear(status, h('p', { class: 'error-text' }, `The rescore jobs are unavailable: ${e.message}`));
      return;
    }
    if (gone || mine !== seq) return;
    render(jobs);
    if (jobs.some((j) => j.state === 'running')) timer = setTimeout(refresh, POLL_MS);
  }

  async function start() {
    button.disabled = true;
    message.className = 'message rescore-message';
    message.textContent = 'Starting a rescore…';
    try {
      const job = await api('POST', '/rescore', {});
      message.textContent = `Rescore ${job.id} started.`;
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return;
      message.className = 'message rescore-message error-text';
      message.textContent =
        e instanceof ApiError && e.status === 409
          ? `A rescore is already running (job ${e.body.id ?? 'unknown'}); one runs at a time. Its progress is below.`
          : `The rescore did not start: ${e.message}`;
    } finally {
      button.disabled = false;
    }
    if (!gone) await refresh();
  }

  async function cancel(id) {
    try {
      await api('DELETE', `/rescore/${encodeURIComponent(id)}`);
      message.className = 'message rescore-message';
      message.textContent = `Rescore ${id} cancelled.`;
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return;
      message.className = 'message rescore-message error-text';
      message.textContent = `Rescore ${id} was not cancelled: ${e.message}`;
    }
    if (!gone) await refresh();
  }

  function render(jobs) {
    const running = jobs.find((j) => j.state === 'running');
    const last = jobs.find((j) => j.state !== 'running');
    clear(
      status,
      running
        ? h(
            'div',
            { class: 'rescore-running', 'data-field': 'rescore-running', dataset: { jobId: running.id } },
            h('progress', { 'aria-label': `Rescore ${running.id} running` }),
            h(
              'span',
              {},
              h('strong', {}, 'Rescoring'),
              ` (cause ${running.cause}, contacts first seen since ${when(running.since)}, started ${when(running.started_at)}): `,
              h('span', { 'data-field': 'running-scored' }, String(running.scored ?? 0)),
              ' scored, ',
              h('span', { 'data-field': 'running-changed' }, String(running.changed ?? 0)),
              ' changed, ',
              h('span', { 'data-field': 'running-pushed' }, String(running.pushed ?? 0)),
              ' pushed so far.',
            ),
            h('button', { type: 'button', class: 'small danger', onclick: () => cancel(running.id) }, 'Cancel'),
          )
        : null,
      last ? lastJob(last) : running ? null : h('p', { class: 'hint', 'data-field': 'rescore-none' }, 'No rescore has run yet.'),
      compact || !jobs.length ? null : jobsTable(jobs),
    );
  }

  refresh();
  return {
    el,
    refresh,
    destroy() {
      gone = true;
      seq += 1;
      clearTimeout(timer);
    },
  };
}

function lastJob(j) {
  const failed = j.state === 'failed';
  return h(
    'p',
    { class: `rescore-last${failed ? ' error-text' : ''}`, 'data-field': 'rescore-last', dataset: { jobId: j.id, state: j.state } },
    'Last rescore ',
    h('span', { class: `status status-${j.state}`, 'data-field': 'last-state' }, j.state),
    ` ${when(j.finished_at)} (cause ${j.cause}): `,
    h('strong', { 'data-field': 'last-changed' }, String(j.changed ?? 0)),
    ` contact${j.changed === 1 ? '' : 's'} changed, `,
    h('strong', { 'data-field': 'last-pushed' }, String(j.pushed ?? 0)),
    ' pushed, ',
    h('span', { 'data-field': 'last-scored' }, String(j.scored ?? 0)),
    ' scored.',
    j.error ? ` Error: ${j.error}` : null,
  );
}

function jobsTable(jobs) {
  const cols = ['Job', 'State', 'Cause', 'Contacts since', 'Scored', 'Changed', 'Pushed', 'Started', 'Finished'];
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { class: 'rescore-jobs', 'data-field': 'rescore-jobs' },
      h('caption', {}, 'Recent rescores, newest first.'),
      h('thead', {}, h('tr', {}, cols.map((c) => h('th', { scope: 'col', class: ['Scored', 'Changed', 'Pushed'].includes(c) ? 'num' : undefined }, c)))),
      h(
        'tbody',
        {},
        jobs.map((j) =>
          h(
            'tr',
            { dataset: { jobId: j.id, state: j.state } },
            h('th', { scope: 'row', class: 'mono small' }, j.id),
            h('td', { 'data-field': 'state' }, h('span', { class: `status status-${j.state}` }, j.state)),
            h('td', { 'data-field': 'cause' }, j.cause),
            h('td', { class: 'small' }, when(j.since)),
            h('td', { class: 'num', 'data-field': 'scored' }, String(j.scored ?? 0)),
            h('td', { class: 'num', 'data-field': 'changed' }, String(j.changed ?? 0)),
            h('td', { class: 'num', 'data-field': 'pushed' }, String(j.pushed ?? 0)),
            h('td', { class: 'small' }, when(j.started_at)),
            h('td', { class: 'small' }, when(j.finished_at)),
          ),
        ),
      ),
    ),
  );
}
