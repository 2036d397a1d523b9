// Every call to the engine's API: same origin only, the admin token (kept in
// sessionStorage for this browser tab's session) as a Bearer token. A 401
// sends the console back to its login form.

const TOKEN_KEY = 'leadscore.adminToken';
let onUnauthorized = () => {};

export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

export function getToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) ?? '';
  } catch {
    return '';
  }
}

export function setToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // storage unavailable: the token lives only as long as this page
  }
}

export class ApiError extends Error {
  constructor(status, body, retryAfter) {
    super(body?.error ?? `the engine answered ${status}`);
    this.status = status;
    this.body = body ?? {};
    this.retryAfter = retryAfter;
  }
}

/**
 * `api('GET', '/rules')`, `api('POST', '/backtest', {…})`. A string body is
 * sent as text; anything else as JSON. Resolves with the parsed answer;
 * rejects with an ApiError (status, body) for any non-2xx answer.
 */
export async function api(method, path, body, { signal, token } = {}) {
  const headers = { Accept: 'application/json' };
  const bearer = token ?? getToken();
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  let payload;
  if (typeof body === 'string') {
    headers['Content-Type'] = 'text/plain; charset=utf-8';
    payload = body;
  } else if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body: payload, signal, cache: 'no-store' });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, { error: `the engine cannot be reached (${e.message})` });
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { error: text.slice(0, 300) };
  }
  if (!response.ok) {
    const err = new ApiError(response.status, data, response.headers.get('Retry-After'));
    if (response.status === 401 && token === undefined) onUnauthorized(err);
    throw err;
  }
  return data;
}

/** The console's open configuration (no token needed). */
export async function consoleConfig() {
  const response = await fetch('/console/config', { cache: 'no-store' });
  if (!response.ok) throw new Error(`GET /console/config answered ${response.status}`);
  return response.json();
}
