// The access token of an editor link (`/d/<id>?token=...`): taken from the address
// bar once and kept out of it (so it does not end up in history, screenshots or a
// copied link), remembered for this tab so a reload still works, and passed to the
// provider as `?token=` on the WebSocket URL.
//
// The token's claims are read here only to shape the page (a `read` token gets a
// view-only editor); the server verifies the token and enforces the mode itself.

const STORAGE_PREFIX = 'tandem.token.'

/**
 * The token for `docId`: from the address bar (which is then cleaned), else the one
 * this tab saw before. `null` when there is none (a server without auth).
 * @param {string} docId
 * @returns {string | null}
 */
export function takeToken (docId) {
  const url = new URL(location.href)
  const fromUrl = url.searchParams.get('token')
  if (fromUrl) {
    try { sessionStorage.setItem(STORAGE_PREFIX + docId, fromUrl) } catch {}
    url.searchParams.delete('token')
    history.replaceState(history.state, '', url.pathname + url.search + url.hash)
    return fromUrl
  }
  try { return sessionStorage.getItem(STORAGE_PREFIX + docId) } catch { return null }
}

/** Forgets the tab's token for `docId` (it was refused). */
export function forgetToken (docId) {
  try { sessionStorage.removeItem(STORAGE_PREFIX + docId) } catch {}
}

/**
 * The `mode` claim of `token` (`read`, `write`, `admin`), or null if unreadable.
 * Not verified: for the UI only.
 * @param {string | null} token
 */
export function tokenMode (token) {
  if (!token) return null
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')
    const claims = JSON.parse(atob(payload.padEnd(Math.ceil(payload.length / 4) * 4, '=')))
    return typeof claims.mode === 'string' ? claims.mode : null
  } catch {
    return null
  }
}

/**
 * What to tell the reader when the server refused the connection for good, by close code.
 * @param {number} code
 * @returns {string | null}
 */
export function refusalMessage (code) {
  if (code === 4401) return 'This link has expired or is not valid. Ask whoever shared it for a new one.'
  if (code === 4403) return "You don't have access to this document."
  return null
}
