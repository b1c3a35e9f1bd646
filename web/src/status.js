// Connection and sync state of one WebsocketProvider, for the indicators in the bar.
//
// Connection: `connected` while the socket is open; `connecting` on the first attempt;
// `offline` once an attempt failed or a live connection dropped (y-websocket keeps
// retrying with backoff on its own, and we say so).
//
// Sync: the Yjs protocol has no acknowledgements, so we ask for one. After local edits
// we send a SyncStep1 of our own; the server answers every SyncStep1 with a SyncStep2,
// in order, on the same connection. So when that answer arrives, the server has applied
// everything we sent before the question. States: `loading` (first sync not done),
// `saving` (edits not yet confirmed), `synced`, `unsynced` (offline with local edits).

import * as encoding from 'lib0/encoding'
import * as syncProtocol from 'y-protocols/sync'

const MESSAGE_SYNC = 0
const SYNC_STEP2 = 1
const PROBE_DELAY_MS = 150

/**
 * Tracks `provider` and calls `onChange(state)` when its connection or sync state changes;
 * `state.closeReason` is the server's last close reason, `state.stopped` is true once the
 * server told the client not to reconnect.
 * @param {import('y-websocket').WebsocketProvider} provider
 * @param {(state: { connection: string, sync: string, closeReason: string, stopped: boolean }) => void} onChange
 */
export function trackStatus (provider, onChange) {
  const doc = provider.doc
  let connection = 'connecting'
  let failedSinceConnected = false
  let everSynced = false
  let localVersion = 0 // bumped by every local edit
  let confirmedVersion = 0 // highest localVersion the server has confirmed
  let probes = [] // localVersion at each unanswered probe, oldest first
  let probeTimer = null
  let closeReason = '' // what the server said when it last closed the connection
  let stopped = false // the server asked us not to reconnect (close codes 4400-4499)

  const syncState = () => {
    if (!everSynced && localVersion === 0) return 'loading'
    if (confirmedVersion >= localVersion && provider.synced) return 'synced'
    if (connection !== 'connected') return localVersion > confirmedVersion ? 'unsynced' : 'loading'
    return 'saving'
  }

  let last = ''
  const emit = () => {
    const state = { connection, sync: syncState(), closeReason, stopped }
    const key = [state.connection, state.sync, closeReason, stopped].join('/')
    if (key !== last) {
      last = key
      onChange(state)
    }
  }

  const sendProbe = () => {
    probeTimer = null
    const ws = provider.ws
    if (!provider.synced || !ws || ws.readyState !== WebSocket.OPEN) return
    if (confirmedVersion >= localVersion) return
    const encoder = encoding.createEncoder()
    encoding.writeVarUint(encoder, MESSAGE_SYNC)
    syncProtocol.writeSyncStep1(encoder, doc)
    ws.send(encoding.toUint8Array(encoder))
    probes.push(localVersion)
  }

  const scheduleProbe = () => {
    if (probeTimer === null) probeTimer = setTimeout(sendProbe, PROBE_DELAY_MS)
  }

  // Peek at sync messages from the server: a SyncStep2 after the first answers a probe.
  const handleSync = provider.messageHandlers[MESSAGE_SYNC]
  provider.messageHandlers[MESSAGE_SYNC] = (encoder, decoder, prov, emitSynced, type) => {
    const syncType = decoder.arr[decoder.pos]
    const wasSynced = prov.synced
    handleSync(encoder, decoder, prov, emitSynced, type)
    if (emitSynced && syncType === SYNC_STEP2 && wasSynced && probes.length > 0) {
      confirmedVersion = Math.max(confirmedVersion, probes.shift())
      emit()
    }
  }

  doc.on('update', (_update, origin) => {
    if (origin === provider) return
    localVersion++
    scheduleProbe()
    emit()
  })

  provider.on('status', ({ status }) => {
    if (status === 'connected') {
      connection = 'connected'
      failedSinceConnected = false
    } else if (status === 'disconnected') {
      connection = 'offline'
      failedSinceConnected = true
    } else {
      connection = failedSinceConnected ? 'offline' : 'connecting'
    }
    if (!navigator.onLine && connection !== 'connected') connection = 'offline'
    emit()
  })

  provider.on('connection-close', (event) => {
    closeReason = event && event.reason ? `${event.reason} (${event.code})` : ''
    failedSinceConnected = true
    probes = []
    if (connection !== 'connected') connection = 'offline'
    emit()
  })

  provider.on('sync', (synced) => {
    if (synced) {
      everSynced = true
      // Offline edits went out in answer to the server's SyncStep1; confirm them.
      if (localVersion > confirmedVersion) scheduleProbe()
    }
    emit()
  })

  provider.on('closed', () => {
    stopped = true
    connection = 'offline'
    emit()
  })

  window.addEventListener('offline', () => {
    if (connection !== 'connected') {
      connection = 'offline'
      emit()
    }
  })

  emit()
  return {
    /** True while some local edit has not been confirmed by the server. */
    hasUnsyncedEdits: () => localVersion > confirmedVersion
  }
}
