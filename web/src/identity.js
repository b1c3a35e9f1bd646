// Who you are to the others: a display name and a colour, kept in localStorage and
// published in awareness as `user: { name, color, colorLight }` (the shape
// y-codemirror.next reads to draw remote carets and selections).

import { randomName } from './docid.js'

const NAME_KEY = 'tandem.name'
const COLOR_KEY = 'tandem.color'

/** Colours that read well as caret labels with white text on a white page. */
export const PALETTE = [
  '#e5484d', '#e2640c', '#b57d00', '#2f9e5c', '#12a594',
  '#0b84e3', '#5b5bd6', '#8e4ec6', '#d6409f', '#7d6a5b'
]

function read (key) {
  try { return localStorage.getItem(key) } catch { return null }
}

function write (key, value) {
  try { localStorage.setItem(key, value) } catch { /* storage unavailable */ }
}

/** The stored identity, creating and storing a random one on first visit. */
export function loadIdentity () {
  let name = (read(NAME_KEY) || '').trim()
  let color = read(COLOR_KEY)
  if (!name) {
    name = randomName()
    write(NAME_KEY, name)
  }
  if (!color || !/^#[0-9a-f]{6}$/i.test(color)) {
    color = PALETTE[Math.floor(Math.random() * PALETTE.length)]
    write(COLOR_KEY, color)
  }
  return { name, color }
}

/** Stores a changed name and/or colour. */
export function saveIdentity ({ name, color }) {
  if (name !== undefined) write(NAME_KEY, name)
  if (color !== undefined) write(COLOR_KEY, color)
}

/** The awareness `user` field for an identity. */
export function awarenessUser ({ name, color }) {
  return { name, color, colorLight: color + '33' }
}

/** One or two initials for an avatar. */
export function initials (name) {
  const parts = String(name || '?').trim().split(/\s+/).filter(Boolean)
  const letters = parts.length > 1 ? parts[0][0] + parts[parts.length - 1][0] : (parts[0] || '?').slice(0, 2)
  return letters.toUpperCase()
}
