// A stock y-websocket provider with `params: { token }` against the real tandem
// server running `--auth jwt`: admitted with a token from `tandem token`, refused
// for good (no reconnect loop) with an expired or out-of-scope one.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { createHmac } from 'node:crypto'
import { TandemServer, bin } from './server.mjs'
import { connect, synced, waitFor, close } from './support.mjs'

const SECRET = 'tandem-interop-test-secret-0123456789abcdef'
let server
const clients = []
const open = (docId, opts) => { const c = connect(server.wsUrl, docId, opts); clients.push(c); return c }

before(async () => { server = await new TandemServer(['--auth', 'jwt', '--auth-secret', SECRET]).start() })
after(async () => {
  clients.forEach(close)
  await server.dispose()
})

/** A token from `tandem token` (the server's own signing code). */
function cliToken (...args) {
  return execFileSync(bin, ['token', ...args], { env: { ...process.env, TANDEM_AUTH_SECRET: SECRET } })
    .toString().split('\n')[0]
}

/** An HS256 JWT signed here, for claims `tandem token` would not make (an expired one). */
function handMadeToken (claims) {
  const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url')
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`
  return `${body}.${createHmac('sha256', SECRET).update(body).digest('base64url')}`
}

/** Waits for the provider's final `closed` event; resolves to its code. */
function closedFor (client) {
  return new Promise((resolve) => client.provider.once('closed', ({ code }) => resolve(code)))
}

test('a stock provider with params.token syncs; a prefix token admits its documents', async () => {
  const token = cliToken('--prefix', 'team-a.', '--mode', 'write', '--ttl', '10m', '--sub', 'interop')
  const a = open('team-a.notes', { params: { token } })
  const b = open('team-a.notes', { params: { token } })
  await Promise.all([synced(a), synced(b)])
  a.text.insert(0, 'signed in')
  await waitFor('b sees a', () => b.text.toString() === 'signed in')
})

test('an expired token gets permission denied, close 4401, and no reconnect loop', async () => {
  const now = Math.floor(Date.now() / 1000)
  const token = handMadeToken({ sub: 'late', docs: ['*'], mode: 'write', exp: now - 3600 })
  const warnings = []
  const warn = console.warn
  console.warn = (...args) => { warnings.push(args.join(' ')) }
  try {
    const c = open('team-a.notes', { params: { token } })
    const code = await closedFor(c)
    assert.equal(code, 4401)
    assert.equal(c.provider.shouldConnect, false, 'the provider stopped reconnecting')
    await waitFor('the permission-denied reason reached the client', () => warnings.some(w => /expired/.test(w)))
  } finally {
    console.warn = warn
  }
})

test('a token for other documents gets close 4403', async () => {
  const token = cliToken('--doc', 'only-this', '--mode', 'read', '--ttl', '10m')
  const c = open('another', { params: { token } })
  assert.equal(await closedFor(c), 4403)
  assert.equal(c.provider.synced, false, 'nothing of the document was sent')
})
