// Document ids: the same rule as the server's DocId (A-Z a-z 0-9 . _ -, 1-128 chars),
// readable random ids for new documents, and the "recently opened" list.

const DOC_ID = /^[A-Za-z0-9._-]{1,128}$/
const RECENT_KEY = 'tandem.recent'
const RECENT_MAX = 8

const ADJECTIVES = [
  'calm', 'brave', 'bright', 'clever', 'cosy', 'eager', 'gentle', 'happy', 'jolly', 'kind',
  'lively', 'lucky', 'merry', 'mellow', 'nimble', 'quiet', 'rapid', 'snug', 'sunny', 'swift',
  'tidy', 'warm', 'witty', 'zesty', 'amber', 'coral', 'misty', 'silver', 'golden', 'olive'
]
const ANIMALS = [
  'otter', 'badger', 'falcon', 'heron', 'lynx', 'marten', 'panda', 'puffin', 'quokka', 'raven',
  'robin', 'seal', 'sparrow', 'tiger', 'walrus', 'whale', 'wombat', 'yak', 'zebra', 'koala',
  'beaver', 'crane', 'dolphin', 'ferret', 'gecko', 'ibis', 'lemur', 'moose', 'newt', 'owl'
]

/** True if `id` is a valid document id. */
export function isValidDocId (id) {
  return typeof id === 'string' && DOC_ID.test(id)
}

/** Turns what a person typed into a document id: trims, spaces become dashes. */
export function normalizeDocId (input) {
  return input.trim().replace(/\s+/g, '-')
}

function pick (list) {
  return list[Math.floor(Math.random() * list.length)]
}

/** A fresh, readable document id such as `calm-otter-42`. */
export function randomDocId () {
  return `${pick(ADJECTIVES)}-${pick(ANIMALS)}-${10 + Math.floor(Math.random() * 90)}`
}

/** A friendly default display name such as `Calm Otter`. */
export function randomName () {
  const cap = (s) => s[0].toUpperCase() + s.slice(1)
  return `${cap(pick(ADJECTIVES))} ${cap(pick(ANIMALS))}`
}

/** The editor's URL path for a document. */
export function docPath (id) {
  return '/d/' + encodeURIComponent(id)
}

/** Recently opened document ids, most recent first. */
export function recentDocs () {
  try {
    const list = JSON.parse(localStorage.getItem(RECENT_KEY) || '[]')
    return Array.isArray(list) ? list.filter(isValidDocId) : []
  } catch {
    return []
  }
}

/** Remembers that `id` was just opened. */
export function rememberDoc (id) {
  try {
    const list = [id, ...recentDocs().filter((d) => d !== id)].slice(0, RECENT_MAX)
    localStorage.setItem(RECENT_KEY, JSON.stringify(list))
  } catch {
    // Private mode or storage full: the list is a convenience only.
  }
}
