// The admin API client: JSON in and out, the session's CSRF token on every change, and
// the API's error shape ({"error": {"message", "field"}}) as an ApiError.

let csrf = null;
let onSignedOut = () => {};

export function setCsrf(token) {
  csrf = token;
}

/** Called when a call answers 401: the session ended. */
export function whenSignedOut(callback) {
  onSignedOut = callback;
}

export class ApiError extends Error {
  constructor(status, message, field) {
    super(message);
    this.status = status;
    this.field = field || null;
  }
}

async function read(res) {
  const text = await res.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  return { text, body };
}

/** `method` `/admin/api{path}` with an optional JSON body; the answer's JSON (null for 204). */
export async function api(method, path, body, { quiet401 = false } = {}) {
  const headers = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET' && csrf) headers['x-csrf-token'] = csrf;
  let res;
  try {
    res = await fetch(`/admin/api${path}`, {
      method,
      headers,
      credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, `diglot did not answer (${e.message}): is it running?`);
  }
  if (res.status === 204) return null;
  const { text, body: json } = await read(res);
  if (!res.ok) {
    const message = json?.error?.message || text || res.statusText;
    if (res.status === 401 && !quiet401) onSignedOut(message);
    throw new ApiError(res.status, message, json?.error?.field);
  }
  return json;
}

export const get = (path, options) => api('GET', path, undefined, options);
export const post = (path, body) => api('POST', path, body ?? {});
export const patch = (path, body) => api('PATCH', path, body);
export const put = (path, body) => api('PUT', path, body);
export const del = (path) => api('DELETE', path);

/** A query string of the non-empty values of `params`. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}
