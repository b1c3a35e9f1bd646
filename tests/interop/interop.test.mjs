// A stock yjs + y-websocket WebsocketProvider against the real tandem server.
// Run by `just interop` (or `node --test tests/interop/` with TANDEM_BIN set).
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { TandemServer } from './server.mjs'
import { connect, synced, waitFor, remoteUsers, close } from './support.mjs'

let server
const clients = []
const open = (docId, opts) => { const c = connect(server.wsUrl, docId, opts); clients.push(c); return c }
let docSeq = 0
const freshDoc = () => `interop-${process.pid}-${++docSeq}`

before(async () => { server = await new TandemServer().start() })
after(async () => {
  clients.forEach(close)
  await server.dispose()
})

test('stock provider syncs text both ways', async () => {
  const docId = freshDoc()
  const a = open(docId)
  const b = open(docId)
  await Promise.all([synced(a), synced(b)])
  a.text.insert(0, 'hello from a')
  await waitFor('b sees a', () => b.text.toString() === 'hello from a')
  b.text.insert(b.text.length, ', and b')
  await waitFor('a sees b', () => a.text.toString() === 'hello from a, and b')
})

test('concurrent edits from three providers converge', async () => {
  const docId = freshDoc()
  const peers = [open(docId), open(docId), open(docId)]
  await Promise.all(peers.map(p => synced(p)))
  for (let round = 0; round < 20; round++) {
    peers.forEach((p, i) => {
      p.text.insert(Math.min(round, p.text.length), `${i}`)
      if (round % 5 === 4 && p.text.length > 2) p.text.delete(1, 1)
    })
  }
  await waitFor('all three texts equal', () => {
    const [x, y, z] = peers.map(p => p.text.toString())
    return x === y && y === z
  })
  // Each peer inserted 20 characters; 4 rounds x 3 peers deleted one each.
  assert.equal(peers[0].text.length, 3 * 20 - 3 * 4)
})

test('late joiner receives full document', async () => {
  const docId = freshDoc()
  const writer = open(docId)
  await synced(writer)
  const body = 'line\n'.repeat(2000)
  writer.text.insert(0, body)
  writer.text.insert(0, '# title\n')
  const late = open(docId)
  await synced(late)
  await waitFor('late joiner has all text', () => late.text.toString() === '# title\n' + body)
})

test('awareness propagates and is removed when a peer leaves cleanly', async () => {
  const docId = freshDoc()
  const ada = open(docId, { user: { name: 'Ada', color: '#c33' } })
  const bob = open(docId, { user: { name: 'Bob', color: '#33c' } })
  await Promise.all([synced(ada), synced(bob)])
  await waitFor('ada sees bob', () => remoteUsers(ada).includes('Bob'))
  await waitFor('bob sees ada', () => remoteUsers(bob).includes('Ada'))
  close(bob)
  await waitFor('bob is gone for ada', () => !remoteUsers(ada).includes('Bob'))
})

test('awareness of an abruptly dropped peer is removed by the server', async () => {
  const docId = freshDoc()
  const ada = open(docId, { user: { name: 'Ada', color: '#c33' } })
  const eve = open(docId, { user: { name: 'Eve', color: '#3c3' } })
  await Promise.all([synced(ada), synced(eve)])
  await waitFor('ada sees eve', () => remoteUsers(ada).includes('Eve'))
  // Cut eve's TCP connection without a close frame or awareness goodbye.
  eve.provider.shouldConnect = false
  eve.provider.ws.terminate()
  await waitFor('eve is gone for ada', () => !remoteUsers(ada).includes('Eve'))
})

test('lone client hears its own awareness echoed', async () => {
  // The y-websocket client reconnects after 30 s of silence; the server keeps
  // a lone client alive by echoing its awareness back to it.
  const solo = open(freshDoc())
  await synced(solo)
  const before = solo.provider.wsLastMessageReceived
  solo.awareness.setLocalStateField('user', { name: 'Solo', color: '#999' })
  await waitFor('a message after the awareness change', () => solo.provider.wsLastMessageReceived > before)
})

test('a cursor moved with an edit reaches a stock client with the edit, long before the awareness delay', async () => {
  // A server that holds a lone cursor change 1 s: one that comes sooner
  // came in the same socket write as the edit (two frames, one write). Its
  // awareness rate limit is out of the way (one change per ms).
  const slow = await new TandemServer(['--awareness-delay-ms', '1000', '--awareness-per-sec', '1000']).start()
  const mine = []
  try {
    const docId = freshDoc()
    const ada = connect(slow.wsUrl, docId, { user: { name: 'Ada', color: '#c33' } })
    const bob = connect(slow.wsUrl, docId, { user: { name: 'Bob', color: '#33c' } })
    mine.push(ada, bob)
    await Promise.all([synced(ada), synced(bob)])
    await waitFor('bob sees ada', () => remoteUsers(bob).includes('Ada'))
    const adaAt = () => bob.awareness.getStates().get(ada.doc.clientID)
    ada.awareness.setLocalStateField('cursor', { index: 1 })
    ada.text.insert(0, 'x')
    await waitFor('bob sees the edit and the cursor', () =>
      bob.text.toString() === 'x' && adaAt()?.cursor?.index === 1, 700)
  } finally {
    mine.forEach(close)
    await slow.dispose()
  }
})

test('documents survive a server restart and providers reconnect by themselves', async () => {
  const docId = freshDoc()
  const a = open(docId)
  const b = open(docId)
  await Promise.all([synced(a), synced(b)])
  a.text.insert(0, 'before restart')
  await waitFor('b has the text', () => b.text.toString() === 'before restart')

  const status = await server.stop('SIGTERM')
  assert.equal(status.code, 0, 'SIGTERM is a graceful shutdown with exit code 0')
  await waitFor('a sees the disconnect', () => !a.provider.wsconnected)
  await server.start()

  await waitFor('a reconnects', () => a.provider.wsconnected && a.provider.synced, 20000)
  await waitFor('b reconnects', () => b.provider.wsconnected && b.provider.synced, 20000)
  b.text.insert(b.text.length, ' and after')
  await waitFor('a sees new typing', () => a.text.toString() === 'before restart and after')

  const fresh = open(docId)
  await synced(fresh)
  await waitFor('a new client reads the stored text', () => fresh.text.toString() === 'before restart and after')
})

test('acknowledged edits survive SIGKILL', async () => {
  const docId = freshDoc()
  const a = open(docId)
  const b = open(docId)
  await Promise.all([synced(a), synced(b)])
  a.text.insert(0, 'durable before broadcast')
  // Tandem broadcasts an update only once it is durable: when b has it, so does the disk.
  await waitFor('b has the text', () => b.text.toString() === 'durable before broadcast')
  close(a)
  close(b)
  await server.stop('SIGKILL')
  await server.start()
  const reader = open(docId)
  await synced(reader)
  await waitFor('text read back after crash', () => reader.text.toString() === 'durable before broadcast')
})
