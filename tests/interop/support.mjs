// Yjs clients and condition waits shared by the interop tests.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

/** Resolves once `predicate()` is truthy; rejects with `what` after `timeoutMs`. */
export async function waitFor (what, predicate, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`)
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}

/** A stock WebsocketProvider (unchanged y-websocket) on a fresh Y.Doc. */
export function connect (wsUrl, docId, { user, params } = {}) {
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(wsUrl, docId, doc, {
    WebSocketPolyfill: WebSocket,
    // Clients in one process would otherwise also sync through an in-process
    // BroadcastChannel and hide what the server does (or fails to do).
    disableBc: true,
    // y-websocket appends these to the URL: `{ token }` becomes `?token=...`.
    params: params || {}
  })
  if (user) provider.awareness.setLocalStateField('user', user)
  const text = doc.getText('content')
  return { doc, provider, text, awareness: provider.awareness }
}

/** Resolves once the provider has completed its initial sync. */
export function synced (client, timeoutMs = 10000) {
  return waitFor('initial sync', () => client.provider.synced, timeoutMs)
}

/** Names of users whose awareness states `client` currently sees, other than its own. */
export function remoteUsers (client) {
  const names = []
  client.awareness.getStates().forEach((state, id) => {
    if (id !== client.doc.clientID && state.user) names.push(state.user.name)
  })
  return names.sort()
}

/** Disconnects and destroys a client. */
export function close (client) {
  client.provider.destroy()
  client.doc.destroy()
}
