// Shared setup for the browser tests: the real tandem binary on a free port with a temp
// data dir (stoppable and restartable on the same port and dir), Debian's Chromium via
// playwright-core, and small helpers that wait on conditions (never fixed sleeps).
//
// The binary comes from TANDEM_BIN (set by `just browser`), else
// $CARGO_TARGET_DIR/debug/tandem, else <repo>/target/debug/tandem. It must have been
// built after `just web`, so that it embeds the editor.

import { spawn } from 'node:child_process'
import { createHmac } from 'node:crypto'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')

const BIN = process.env.TANDEM_BIN ||
  path.join(process.env.CARGO_TARGET_DIR || path.join(REPO, 'target'), 'debug', 'tandem')

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium'
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'
]

/** How long to wait for things that happen within a round trip or two. */
export const QUICK = 10_000
/** Reconnects (y-websocket backs off up to 2.5 s) and awareness renewals (every 15 s). */
export const SLOW = 25_000

/** Debian's Chromium, headless. Never downloads a browser. */
export async function launchBrowser () {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`Chromium not found at ${CHROMIUM}: apt-get install -y chromium (or set CHROMIUM_PATH)`)
  }
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS })
}

/** The real `tandem serve` on 127.0.0.1, a temp data dir, restartable on the same port. */
export class TandemServer {
  /** @param {string[]} extraArgs more `serve` flags (e.g. `--auth jwt ...`) */
  constructor (extraArgs = []) {
    this.extraArgs = extraArgs
    this.dataDir = mkdtempSync(path.join(tmpdir(), 'tandem-browser-'))
    this.listen = '127.0.0.1:0'
    this.child = null
    this.log = ''
  }

  /** Starts the process; resolves once it prints `listening on http://ADDR`. */
  async start () {
    if (!existsSync(BIN)) {
      throw new Error(`tandem binary not found at ${BIN}: run \`cargo build -p tandem\` or set TANDEM_BIN`)
    }
    const child = spawn(BIN, ['serve', '--listen', this.listen, '--data-dir', this.dataDir, ...this.extraArgs], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' }
    })
    this.child = child
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })))
    let seen = ''
    const addr = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`tandem did not start within 15 s:\n${seen}`)), 15_000)
      const onData = (chunk) => {
        seen += chunk.toString()
        this.log += chunk.toString()
        const match = seen.match(/listening on https?:\/\/([0-9.]+:\d+)/)
        if (match) {
          clearTimeout(timer)
          resolve(match[1])
        }
      }
      child.stdout.on('data', onData)
      child.stderr.on('data', onData)
      child.once('exit', (code) => {
        clearTimeout(timer)
        reject(new Error(`tandem exited (${code}) before listening:\n${seen}`))
      })
    })
    // A restart binds the same port, so open pages reconnect by themselves.
    this.listen = addr
    this.origin = `http://${addr}`
    return this
  }

  /** Sends `signal` and waits for the process to exit. */
  async stop (signal = 'SIGTERM') {
    if (!this.child) return null
    const child = this.child
    this.child = null
    child.kill(signal)
    const status = await this.exited
    return status
  }

  /** Kills the server if it runs and removes its data dir. */
  async dispose () {
    await this.stop('SIGKILL')
    rmSync(this.dataDir, { recursive: true, force: true })
  }

  /** Absolute URL of `pathname` on this server. */
  url (pathname) {
    return this.origin + pathname
  }
}

/** Fails early and clearly if the binary was built without the editor bundle. */
export async function assertEditorEmbedded (server) {
  const res = await fetch(server.url('/d/probe'))
  const body = await res.text()
  if (res.status !== 200 || !body.includes('id="editor"')) {
    throw new Error('the tandem binary does not embed the editor: run `just web`, then `cargo build -p tandem`')
  }
}

/**
 * One person: a fresh browser context (own localStorage, no BroadcastChannel shortcut
 * to the others) with a name and colour, showing document `docId`.
 */
export async function openEditor (browser, server, docId, { name, color, token, viewport = { width: 760, height: 560 } }) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1 })
  await context.addInitScript(([n, c]) => {
    localStorage.setItem('tandem.name', n)
    localStorage.setItem('tandem.color', c)
  }, [name, color])
  const page = await context.newPage()
  page.errors = []
  page.on('pageerror', (err) => page.errors.push(err))
  await page.goto(server.url('/d/' + docId + (token ? `?token=${token}` : '')))
  await waitForStatus(page, { connection: 'connected' }, QUICK)
  await page.waitForFunction(() => window.tandem?.provider.synced, null, { timeout: QUICK })
  return { context, page, name, color }
}

/** The document's text as this page's Y.Text holds it. */
export function docText (page) {
  return page.evaluate(() => window.tandem.ytext.toString())
}

/** What the editor shows on screen (CodeMirror's lines joined by newlines). */
export function shownText (page) {
  return page.evaluate(() => window.tandem.view.state.doc.toString())
}

/** Waits until the page's text satisfies `expected` (a string to equal, or to contain with `{ contains }`). */
export async function waitForText (page, expected, { contains = false, timeout = QUICK } = {}) {
  try {
    await page.waitForFunction(([want, sub]) => {
      const text = window.tandem.view.state.doc.toString()
      return sub ? text.includes(want) : text === want
    }, [expected, contains], { timeout, polling: 50 })
  } catch (err) {
    const got = await shownText(page).catch(() => '<page gone>')
    throw new Error(`text never became ${contains ? 'to contain' : ''} ${JSON.stringify(expected)}; it is ${JSON.stringify(got)} (${err.message.split('\n')[0]})`)
  }
}

/** Waits until the connection / sync indicators show the given states. */
export async function waitForStatus (page, { connection, sync }, timeout = QUICK) {
  try {
    await page.waitForFunction(([conn, syn]) => {
      const c = document.getElementById('conn')?.dataset.state
      const s = document.getElementById('sync')?.dataset.state
      return (!conn || c === conn) && (!syn || s === syn)
    }, [connection, sync], { timeout, polling: 50 })
  } catch (err) {
    const now = await page.evaluate(() => [document.getElementById('conn')?.dataset.state, document.getElementById('sync')?.dataset.state])
    throw new Error(`status never became ${connection ?? '*'}/${sync ?? '*'}; it is ${now.join('/')} (${err.message.split('\n')[0]})`)
  }
}

/** Puts the caret at the end of the document and types `text` like a person. */
export async function typeAtEnd (page, text) {
  await page.locator('.cm-content').click()
  await page.keyboard.press('Control+End')
  await page.keyboard.type(text, { delay: 5 })
}

/** Names on the remote carets this page shows. */
export function caretLabels (page) {
  return page.locator('.cm-ySelectionInfo').allInnerTexts()
}

/** Waits until this page shows exactly the remote caret labels `names` (order ignored). */
export async function waitForCarets (page, names, timeout = SLOW) {
  const want = [...names].sort()
  try {
    await page.waitForFunction((w) => {
      const got = [...document.querySelectorAll('.cm-ySelectionInfo')].map((e) => e.textContent).sort()
      return JSON.stringify(got) === JSON.stringify(w)
    }, want, { timeout, polling: 100 })
  } catch (err) {
    throw new Error(`remote carets never became ${JSON.stringify(want)}; they are ${JSON.stringify(await caretLabels(page))} (${err.message.split('\n')[0]})`)
  }
}

/** Waits until the presence list shows `count` people. */
export async function waitForPresence (page, count, timeout = SLOW) {
  try {
    await page.waitForFunction((n) => document.getElementById('presence').dataset.count === String(n), count, { timeout, polling: 100 })
  } catch (err) {
    const names = await page.evaluate(() => window.tandem.awareness.getStates().size + ' awareness states; list: ' +
      [...document.querySelectorAll('#presence .person')].map((e) => e.title).join(', '))
    throw new Error(`presence never showed ${count} people; ${names} (${err.message.split('\n')[0]})`)
  }
}

/** A test HS256 secret for servers started with `--auth jwt`. */
export const TEST_SECRET = 'tandem-browser-test-secret-0123456789abcdef'

/**
 * An HS256 JWT with `claims` (defaults: sub "tester", an hour of validity), signed with
 * `secret`: what `tandem token` or an application's backend would hand out.
 */
export function mintToken (claims, secret = TEST_SECRET) {
  const now = Math.floor(Date.now() / 1000)
  const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url')
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub: 'tester', iat: now, exp: now + 3600, ...claims })}`
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`
}
