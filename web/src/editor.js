// The editor page at /d/<doc-id>: CodeMirror 6 bound to the root Y.Text `content`
// of the document, synced through y-websocket with the server at ws(s)://<host>/ws/<doc-id>.

import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { yCollab, yUndoManagerKeymap, yRemoteSelections } from 'y-codemirror.next'
import { EditorState } from '@codemirror/state'
import { EditorView, keymap, drawSelection, dropCursor, placeholder, highlightSpecialChars } from '@codemirror/view'
import { defaultKeymap, indentWithTab } from '@codemirror/commands'
import { searchKeymap, highlightSelectionMatches } from '@codemirror/search'
import { markdownLanguage, markdownKeymap } from '@codemirror/lang-markdown'
import { syntaxHighlighting } from '@codemirror/language'

import { takeToken, forgetToken, tokenMode, refusalMessage } from './access.js'
import { isValidDocId, rememberDoc } from './docid.js'
import { loadIdentity, saveIdentity, awarenessUser, initials, PALETTE } from './identity.js'
import { showPresence, safeColor } from './presence.js'
import { trackStatus } from './status.js'
import { markdownHighlight, editorTheme } from './theme.js'

/** Name of the root Y.Text holding the document (the HTTP text API reads the same). */
const TEXT_NAME = 'content'

const $ = (id) => document.getElementById(id)

function docIdFromPath () {
  const match = location.pathname.match(/^\/d\/([^/]+)\/?$/)
  if (!match) return null
  try {
    return decodeURIComponent(match[1])
  } catch {
    return null
  }
}

function fail (message) {
  const fatal = $('fatal')
  fatal.hidden = false
  fatal.innerHTML = ''
  fatal.append(message, ' ')
  const link = document.createElement('a')
  link.href = '/'
  link.textContent = 'Open another document'
  fatal.append(link)
  $('editor').hidden = true
}

function start () {
  const docId = docIdFromPath()
  $('doc-name').textContent = docId ?? ''
  if (!isValidDocId(docId)) {
    fail('This is not a valid document name: use letters, digits, . _ - (up to 128).')
    return
  }
  document.title = `${docId} · Tandem`
  rememberDoc(docId)

  const ydoc = new Y.Doc()
  const ytext = ydoc.getText(TEXT_NAME)
  const wsBase = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`
  const token = takeToken(docId)
  const readOnly = tokenMode(token) === 'read'
  $('access-badge').hidden = !readOnly
  const provider = new WebsocketProvider(wsBase, docId, ydoc, { params: token ? { token } : {} })
  const awareness = provider.awareness

  let identity = loadIdentity()
  awareness.setLocalStateField('user', awarenessUser(identity))

  const undoManager = new Y.UndoManager(ytext)
  const view = new EditorView({
    parent: $('editor'),
    state: EditorState.create({
      doc: ytext.toString(),
      extensions: [
        keymap.of([...yUndoManagerKeymap, ...markdownKeymap, ...defaultKeymap, ...searchKeymap, indentWithTab]),
        highlightSpecialChars(),
        drawSelection(),
        dropCursor(),
        highlightSelectionMatches(),
        EditorView.lineWrapping,
        // A read token: the server applies none of our edits, so offer none.
        EditorState.readOnly.of(readOnly),
        EditorView.editable.of(!readOnly),
        EditorView.contentAttributes.of({ 'aria-label': `Document ${docId}`, spellcheck: 'true' }),
        placeholder('Start writing… Markdown works: # heading, **bold**, - list'),
        // The language alone: markdown() would also bundle an HTML parser (+140 KiB).
        markdownLanguage,
        syntaxHighlighting(markdownHighlight),
        editorTheme,
        yCollab(ytext, awareness, { undoManager }),
        relabelRenamedCarets
      ]
    })
  })

  // 4401/4403 are final (y-websocket stops reconnecting on 4400-4499): say why.
  provider.on('closed', ({ code }) => {
    const message = refusalMessage(code)
    if (!message) return
    forgetToken(docId)
    document.body.dataset.access = code === 4401 ? 'expired' : 'forbidden'
    // Nothing is loading or present any more: only the reason remains.
    $('sync').hidden = true
    $('presence').style.display = 'none'
    fail(message)
  })

  const status = trackStatus(provider, ({ connection, sync, closeReason, stopped }) => {
    const conn = $('conn')
    conn.dataset.state = connection
    conn.querySelector('.text').textContent = stopped
      ? 'Disconnected'
      : { connected: 'Connected', connecting: 'Connecting…', offline: 'Offline' }[connection]
    const because = closeReason ? ` Server said: ${closeReason}.` : ''
    conn.title = stopped
      ? `The server closed this document and asked not to reconnect; reload to try again.${because}`
      : connection === 'offline'
        ? `Offline: keep writing, your edits merge when the connection is back.${because}`
        : 'Connection to the server'
    const syncEl = $('sync')
    syncEl.dataset.state = sync
    syncEl.textContent =
      { loading: 'Loading…', saving: 'Saving…', synced: 'All changes saved', unsynced: 'Edits kept locally' }[sync]
  })

  showPresence($('presence'), awareness)
  setupIdentityPanel(identity, (changed) => {
    identity = { ...identity, ...changed }
    saveIdentity(changed)
    awareness.setLocalStateField('user', awarenessUser(identity))
  })
  setupCopyLink()

  // After a reconnect the others ignore our awareness until its clock moves past the
  // one they saw before the drop (otherwise up to 15 s, at the next renewal): bump it.
  provider.on('status', ({ status: s }) => {
    if (s === 'connected') {
      setTimeout(() => {
        const state = awareness.getLocalState()
        if (state !== null && provider.wsconnected) awareness.setLocalState({ ...state })
      }, 0)
    }
  })

  // Leave at once rather than when the server notices the closed socket; come back
  // if the page is restored from the back/forward cache.
  window.addEventListener('pagehide', () => awareness.setLocalState(null))
  window.addEventListener('pageshow', (event) => {
    if (event.persisted) awareness.setLocalStateField('user', awarenessUser(identity))
  })
  window.addEventListener('beforeunload', (event) => {
    if (status.hasUnsyncedEdits() && !provider.wsconnected) event.preventDefault()
  })

  if (!readOnly) view.focus()
  // For tests and for poking around in the console.
  window.tandem = { docId, ydoc, ytext, provider, awareness, view, undoManager, readOnly }
}

/**
 * y-codemirror.next's caret widget compares colours only, so a peer who renames
 * themselves would keep their old label. Its class is not exported: on the first
 * remote caret, teach its `eq` to compare names too.
 */
const relabelRenamedCarets = EditorView.updateListener.of((update) => {
  if (caretWidgetPatched) return
  const plugin = update.view.plugin(yRemoteSelections)
  plugin?.decorations.between(0, update.state.doc.length, (_from, _to, deco) => {
    const widget = deco.spec.widget
    if (!widget || caretWidgetPatched) return
    const proto = Object.getPrototypeOf(widget)
    proto.eq = function (other) { return other.color === this.color && other.name === this.name }
    proto.compare = proto.eq
    caretWidgetPatched = true
  })
})
let caretWidgetPatched = false

function setupIdentityPanel (identity, onChange) {
  const button = $('me')
  const panel = $('me-panel')
  const nameInput = $('me-name')
  const swatches = $('me-colors')

  const paintButton = () => {
    button.textContent = initials(identity.name)
    button.style.background = safeColor(identity.color)
    button.title = `You are ${identity.name}: change name or colour`
  }
  const paintSwatches = () => {
    for (const swatch of swatches.children) {
      swatch.setAttribute('aria-checked', String(swatch.dataset.color === identity.color))
    }
  }

  for (const color of PALETTE) {
    const swatch = document.createElement('button')
    swatch.type = 'button'
    swatch.className = 'swatch'
    swatch.role = 'radio'
    swatch.dataset.color = color
    swatch.style.background = color
    swatch.title = color
    swatch.addEventListener('click', () => {
      identity = { ...identity, color }
      onChange({ color })
      paintButton()
      paintSwatches()
    })
    swatches.append(swatch)
  }

  const open = (show) => {
    panel.hidden = !show
    button.setAttribute('aria-expanded', String(show))
    if (show) {
      nameInput.value = identity.name
      nameInput.focus()
      nameInput.select()
    }
  }
  button.addEventListener('click', () => open(panel.hidden))
  nameInput.addEventListener('input', () => {
    const name = nameInput.value.trim()
    if (!name) return
    identity = { ...identity, name }
    onChange({ name })
    paintButton()
  })
  nameInput.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' || e.key === 'Escape') {
      open(false)
      button.focus()
    }
  })
  document.addEventListener('pointerdown', (e) => {
    if (!panel.hidden && !panel.contains(e.target) && !button.contains(e.target)) open(false)
  })

  paintButton()
  paintSwatches()
}

function setupCopyLink () {
  const button = $('copy-link')
  const label = button.querySelector('.label')
  let timer = null
  button.addEventListener('click', async () => {
    const url = location.origin + location.pathname
    let ok = false
    try {
      await navigator.clipboard.writeText(url)
      ok = true
    } catch {
      // Clipboard API needs a secure context; fall back to a selected text field.
      const field = document.createElement('textarea')
      field.value = url
      field.style.position = 'fixed'
      field.style.opacity = '0'
      document.body.append(field)
      field.select()
      try { ok = document.execCommand('copy') } catch { ok = false }
      field.remove()
    }
    label.textContent = ok ? 'Link copied' : url
    button.classList.toggle('done', ok)
    clearTimeout(timer)
    timer = setTimeout(() => {
      label.textContent = 'Copy link'
      button.classList.remove('done')
    }, 2000)
  })
}

start()
