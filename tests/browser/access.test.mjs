// Editor links with access tokens, in real Chromium against the real tandem binary
// running with `--auth jwt`: a read-only link, an expired link, a link to another
// document. Run from the repo root: `node --test tests/browser/`.

import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import {
  QUICK, TandemServer, TEST_SECRET, launchBrowser, assertEditorEmbedded, openEditor, mintToken,
  shownText, waitForText, typeAtEnd, waitForPresence
} from './harness.mjs'

const ADA = { name: 'Ada Lovelace', color: '#5b5bd6' }
const GRACE = { name: 'Grace Hopper', color: '#12a594' }

let browser
let server

before(async () => {
  server = await new TandemServer(['--auth', 'jwt', '--auth-secret', TEST_SECRET]).start()
  await assertEditorEmbedded(server)
  browser = await launchBrowser()
})

after(async () => {
  await browser?.close()
  if (process.env.SHOW_SERVER_LOG && server) console.error('--- tandem log ---\n' + server.log.slice(-8000))
  await server?.dispose()
})

test('a read-only link shows a view-only editor that still shows who is here', { timeout: 60_000 }, async () => {
  const ada = await openEditor(browser, server, 'minutes', { ...ADA, token: mintToken({ docs: ['minutes'], mode: 'write' }) })
  const grace = await openEditor(browser, server, 'minutes', { ...GRACE, token: mintToken({ docs: ['minutes'], mode: 'read' }) })
  try {
    assert.ok(!grace.page.url().includes('token='), `the token stays out of the address bar: ${grace.page.url()}`)
    assert.ok(await grace.page.locator('#access-badge').isVisible(), 'the "View only" badge shows')
    assert.equal(await grace.page.locator('#access-badge').innerText(), 'View only')
    assert.ok(!(await ada.page.locator('#access-badge').isVisible()), 'a write link has no badge')
    assert.equal(await grace.page.locator('.cm-content').getAttribute('contenteditable'), 'false')

    await typeAtEnd(ada.page, 'Agenda: ship it.')
    await waitForText(grace.page, 'Agenda: ship it.')
    // Typing into the view-only editor changes nothing, locally or for Ada.
    await grace.page.locator('.cm-content').click()
    await grace.page.keyboard.type('vandalism', { delay: 5 })
    assert.equal(await shownText(grace.page), 'Agenda: ship it.')
    await typeAtEnd(ada.page, ' Done.')
    await waitForText(grace.page, 'Agenda: ship it. Done.')
    assert.equal(await shownText(ada.page), 'Agenda: ship it. Done.')

    // Viewers are present: each sees both people.
    await waitForPresence(ada.page, 2)
    await waitForPresence(grace.page, 2)

    // A reload keeps working although the address bar no longer has the token.
    await grace.page.reload()
    await waitForText(grace.page, 'Agenda: ship it. Done.')
    assert.ok(await grace.page.locator('#access-badge').isVisible())
  } finally {
    await Promise.all([ada.context.close(), grace.context.close()])
  }
})

/** Opens `/d/<docId>?token=...` and counts the WebSockets the page opens. */
async function openRefused (docId, token) {
  const context = await browser.newContext()
  const page = await context.newPage()
  let sockets = 0
  page.on('websocket', () => { sockets++ })
  await page.goto(server.url(`/d/${docId}?token=${token}`))
  return { context, page, sockets: () => sockets }
}

/** Once refused, the provider gives up: no socket, no reconnect scheduled, none opened. */
async function assertStoppedReconnecting (page, sockets) {
  await page.waitForFunction(() => window.tandem.provider.shouldConnect === false && window.tandem.provider.ws === null, null, { timeout: QUICK })
  const opened = sockets()
  // Proving an absence needs a window: y-websocket retries within 2.5 s, so watch for
  // twice that, failing at the first new attempt.
  const until = Date.now() + 5000
  while (Date.now() < until) {
    assert.equal(sockets(), opened, 'the page tried to reconnect')
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

test('an expired link shows the expired state and stops reconnecting', { timeout: 60_000 }, async () => {
  const now = Math.floor(Date.now() / 1000)
  const expired = mintToken({ docs: ['*'], mode: 'write', iat: now - 7200, exp: now - 3600 })
  const { context, page, sockets } = await openRefused('minutes', expired)
  try {
    await page.waitForFunction(() => document.body.dataset.access === 'expired', null, { timeout: QUICK })
    const message = await page.locator('#fatal').innerText()
    assert.match(message, /this link has expired/i)
    assert.ok(!(await page.locator('#editor').isVisible()), 'no editor for an expired link')
    await assertStoppedReconnecting(page, sockets)
    assert.equal(sockets(), 1)
  } finally {
    await context.close()
  }
})

test("a link to another document says you don't have access and stops", { timeout: 60_000 }, async () => {
  const { context, page, sockets } = await openRefused('secret-plans', mintToken({ docs: ['minutes'], mode: 'write' }))
  try {
    await page.waitForFunction(() => document.body.dataset.access === 'forbidden', null, { timeout: QUICK })
    assert.match(await page.locator('#fatal').innerText(), /you don't have access/i)
    await assertStoppedReconnecting(page, sockets)
  } finally {
    await context.close()
  }
})
