import WebSocket from 'ws'
import * as Y from 'yjs'
import * as syncProtocol from 'y-protocols/sync'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
const [base, mode, doc, n] = process.argv.slice(2)
const open = (url) => new Promise((res, rej) => { const ws = new WebSocket(url); ws.binaryType = 'arraybuffer'; ws.on('open', () => res(ws)); ws.on('error', rej) })
const ws = await open(base + doc)
if (mode === 'write') {
  const src = new Y.Doc(); src.getText('codemirror').insert(0, 'x'.repeat(Number(n)))
  const e = encoding.createEncoder(); encoding.writeVarUint(e, 0); syncProtocol.writeUpdate(e, Y.encodeStateAsUpdate(src)); ws.send(encoding.toUint8Array(e))
  ws.close(); setTimeout(() => process.exit(0), 200)
} else {
  const d = new Y.Doc(); { const e1 = encoding.createEncoder(); encoding.writeVarUint(e1, 0); syncProtocol.writeSyncStep1(e1, d); ws.send(encoding.toUint8Array(e1)) }
  ws.on('message', (m) => {
    const dec = decoding.createDecoder(new Uint8Array(m)); if (decoding.readVarUint(dec) !== 0) return
    const enc = encoding.createEncoder(); encoding.writeVarUint(enc, 0)
    const st = syncProtocol.readSyncMessage(dec, enc, d, null)
    if (st === 1) { console.log(doc, 'read back', d.getText('codemirror').length, 'chars'); process.exit(0) }
  })
  setTimeout(() => { console.log('timeout'); process.exit(1) }, 5000)
}
