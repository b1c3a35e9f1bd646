// The editor in real Chromium against the real tandem binary: two people editing one
// document, their carets, reloads and newcomers, a server restart and offline edits.
// Run from the repo root: `node --test tests/browser/` (see harness.mjs for setup).

import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync } from 'node:fs'
import path from 'node:path'
import {
  REPO, QUICK, SLOW, TandemServer, launchBrowser, assertEditorEmbedded, openEditor,
  docText, shownText, waitForText, waitForStatus, typeAtEnd, waitForCarets, waitForPresence
} from './harness.mjs'

const ADA = { name: 'Ada Lovelace', color: '#5b5bd6' }
const GRACE = { name: 'Grace Hopper', color: '#12a594' }
const LINUS = { name: 'Linus', color: '#e2640c' }

const LAUNCH_PLAN = `# Launch plan

Ship the collaborative editor on **Friday**. Everyone sees each other's cursors as they type, and edits made offline merge when the connection is back.

## Checklist

- Live cursors and selections, with names
- Presence list and connection status
- `

let browser
let server

before(async () => {
  server = await new TandemServer().start()
  await assertEditorEmbedded(server)
  browser = await launchBrowser()
})

after(async () => {
  await browser?.close()
  // SHOW_SERVER_LOG=1 prints what the server logged, for a failure that needs it.
  if (process.env.SHOW_SERVER_LOG && server) console.error('--- tandem log ---\n' + server.log.slice(-8000))
  await server?.dispose()
})

/** Opens `docId` for Ada and Grace; the caller closes the returned contexts. */
async function twoPeople (docId) {
  const ada = await openEditor(browser, server, docId, ADA)
  const grace = await openEditor(browser, server, docId, GRACE)
  return { ada, grace, close: () => Promise.all([ada.context.close(), grace.context.close()]) }
}

test('text typed in each window appears in the other, and concurrent typing converges', { timeout: 60_000 }, async () => {
  const { ada, grace, close } = await twoPeople('typing')
  try {
    await typeAtEnd(ada.page, 'Hello from Ada.')
    await waitForText(grace.page, 'Hello from Ada.')

    await typeAtEnd(grace.page, ' Hi Ada, Grace here.')
    await waitForText(ada.page, 'Hello from Ada. Hi Ada, Grace here.')

    // Both type at once, at opposite ends of the document. (Ada's typing starts a new
    // undo step, whatever the timing: Y.UndoManager merges edits 500 ms apart.)
    await ada.page.evaluate(() => window.tandem.undoManager.stopCapturing())
    await ada.page.locator('.cm-content').click()
    await ada.page.keyboard.press('Control+Home')
    await grace.page.locator('.cm-content').click()
    await grace.page.keyboard.press('Control+End')
    await Promise.all([
      ada.page.keyboard.type('[ada types first] ', { delay: 3 }),
      grace.page.keyboard.type(' [grace types last]', { delay: 3 })
    ])
    const expected = '[ada types first] Hello from Ada. Hi Ada, Grace here. [grace types last]'
    await waitForText(ada.page, expected)
    await waitForText(grace.page, expected)
    assert.equal(await docText(ada.page), expected, 'Y.Text and the editor agree')
    await waitForStatus(ada.page, { sync: 'synced' })
    await waitForStatus(grace.page, { sync: 'synced' })

    // Undo takes back only your own typing, in both windows.
    await ada.page.keyboard.press('Control+z')
    const withoutAda = 'Hello from Ada. Hi Ada, Grace here. [grace types last]'
    await waitForText(ada.page, withoutAda)
    await waitForText(grace.page, withoutAda)
    assert.deepEqual([...ada.page.errors, ...grace.page.errors], [])
  } finally {
    await close()
  }
})

test("each window shows the other's caret with the right name, and a closed window's caret disappears", { timeout: 60_000 }, async () => {
  const { ada, grace, close } = await twoPeople('launch-plan')
  try {
    await ada.page.locator('.cm-content').click()
    await ada.page.keyboard.insertText(LAUNCH_PLAN)
    await waitForText(grace.page, LAUNCH_PLAN)
    await typeAtEnd(grace.page, 'Write the README')
    await waitForText(ada.page, LAUNCH_PLAN + 'Write the README')

    await waitForCarets(ada.page, [GRACE.name])
    await waitForCarets(grace.page, [ADA.name])
    const graceCaretColor = await ada.page.locator('.cm-ySelectionCaret').first()
      .evaluate((el) => getComputedStyle(el).borderLeftColor)
    assert.equal(graceCaretColor, 'rgb(18, 165, 148)', "Grace's caret is in Grace's colour")

    await waitForPresence(ada.page, 2)
    const names = await ada.page.locator('#presence .person-name').allInnerTexts()
    assert.deepEqual(names, [`${ADA.name} (you)`, GRACE.name])

    await saveScreenshot(ada.page, grace.page)

    // Renaming shows at once on the other side, on the caret and in the presence list.
    await grace.page.locator('#me').click()
    await grace.page.locator('#me-name').fill('Rear Admiral Hopper')
    await grace.page.locator('#me-name').press('Enter')
    await waitForCarets(ada.page, ['Rear Admiral Hopper'], QUICK)
    assert.deepEqual(await ada.page.locator('#presence .person-name').allInnerTexts(),
      [`${ADA.name} (you)`, 'Rear Admiral Hopper'])
    assert.equal(await grace.page.evaluate(() => localStorage.getItem('tandem.name')), 'Rear Admiral Hopper')

    await grace.context.close()
    await waitForCarets(ada.page, [], QUICK)
    await waitForPresence(ada.page, 1, QUICK)
  } finally {
    await close()
  }
})

test('a reload keeps the text, and a newcomer sees the full text on join', { timeout: 60_000 }, async () => {
  const { ada, grace, close } = await twoPeople('reload')
  try {
    const text = '# Notes\n\nAda wrote this.\nGrace wrote this.'
    await typeAtEnd(ada.page, '# Notes\n\nAda wrote this.\n')
    await waitForText(grace.page, text.slice(0, -'Grace wrote this.'.length))
    await typeAtEnd(grace.page, 'Grace wrote this.')
    await waitForText(ada.page, text)
    await waitForStatus(ada.page, { sync: 'synced' })

    await ada.page.reload()
    await waitForStatus(ada.page, { connection: 'connected' })
    await waitForText(ada.page, text)

    const linus = await openEditor(browser, server, 'reload', LINUS)
    try {
      await waitForText(linus.page, text)
    } finally {
      await linus.context.close()
    }
  } finally {
    await close()
  }
})

test('after a server restart both windows reconnect by themselves and keep syncing', { timeout: 90_000 }, async () => {
  const { ada, grace, close } = await twoPeople('restart')
  try {
    await typeAtEnd(ada.page, 'Written before the restart.')
    await waitForText(grace.page, 'Written before the restart.')
    await waitForStatus(ada.page, { sync: 'synced' })

    await server.stop('SIGTERM')
    await waitForStatus(ada.page, { connection: 'offline' })
    await waitForStatus(grace.page, { connection: 'offline' })

    await server.start()
    await waitForStatus(ada.page, { connection: 'connected', sync: 'synced' }, SLOW)
    await waitForStatus(grace.page, { connection: 'connected', sync: 'synced' }, SLOW)
    assert.equal(await shownText(ada.page), 'Written before the restart.')
    assert.equal(await shownText(grace.page), 'Written before the restart.')
    // Each page re-announces itself on reconnect, so presence is back well before
    // the 15 s awareness renewal.
    await waitForPresence(ada.page, 2, QUICK)
    await waitForPresence(grace.page, 2, QUICK)

    await typeAtEnd(grace.page, ' And after it.')
    await waitForText(ada.page, 'Written before the restart. And after it.')
    await waitForCarets(ada.page, [GRACE.name])

    // The text survived in the server itself, not only in the open pages.
    const linus = await openEditor(browser, server, 'restart', LINUS)
    try {
      await waitForText(linus.page, 'Written before the restart. And after it.')
    } finally {
      await linus.context.close()
    }
  } finally {
    await close()
  }
})

test('an edit made while the server is down reaches the other window when it is back', { timeout: 90_000 }, async () => {
  const { ada, grace, close } = await twoPeople('offline')
  try {
    await typeAtEnd(ada.page, 'Online line.')
    await waitForText(grace.page, 'Online line.')

    await server.stop('SIGTERM')
    await waitForStatus(ada.page, { connection: 'offline' })
    await typeAtEnd(ada.page, ' Offline line.')
    await waitForStatus(ada.page, { connection: 'offline', sync: 'unsynced' })
    assert.equal(await shownText(grace.page), 'Online line.')

    await server.start()
    await waitForText(grace.page, 'Online line. Offline line.', { timeout: SLOW })
    await waitForStatus(ada.page, { connection: 'connected', sync: 'synced' }, SLOW)
  } finally {
    await close()
  }
})

test('the start page creates a readable new document and opens one by name; links copy; bad names are refused', { timeout: 30_000 }, async () => {
  const context = await browser.newContext()
  try {
    const page = await context.newPage()
    await page.goto(server.url('/'))
    await page.getByRole('button', { name: 'Start a new document' }).click()
    await page.waitForURL(/\/d\/[a-z]+-[a-z]+-\d{2}$/, { timeout: QUICK })
    await waitForStatus(page, { connection: 'connected' })

    await page.goto(server.url('/'))
    await page.locator('#doc-input').fill('a/b')
    await page.getByRole('button', { name: 'Open' }).click()
    await page.locator('#open-error').waitFor({ state: 'visible', timeout: QUICK })

    await page.locator('#doc-input').fill('Team notes')
    await page.getByRole('button', { name: 'Open' }).click()
    await page.waitForURL(/\/d\/Team-notes$/, { timeout: QUICK })
    assert.equal(await page.locator('#doc-name').innerText(), 'Team-notes')

    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: server.origin })
    await page.locator('#copy-link').click()
    await page.locator('#copy-link', { hasText: 'Link copied' }).waitFor({ timeout: QUICK })
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), server.url('/d/Team-notes'))

    await page.goto(server.url('/d/no%20spaces%20please'))
    await page.locator('#fatal').waitFor({ state: 'visible', timeout: QUICK })
    assert.match(await page.locator('#fatal').innerText(), /not a valid document name/)

    await page.goto(server.url('/'))
    assert.deepEqual((await page.locator('#recent-list a').allInnerTexts()).slice(0, 1), ['Team-notes'])
  } finally {
    await context.close()
  }
})

/**
 * Two windows side by side, as a reader of the README sees them. Written to
 * tests/browser/screenshots/ (ignored by git); with UPDATE_SCREENSHOT=1 also to
 * docs/screenshot.png.
 */
async function saveScreenshot (left, right) {
  // Ada selects a phrase so the picture shows a remote selection as well as carets.
  await left.evaluate(() => {
    const { view } = window.tandem
    const from = view.state.doc.toString().indexOf('**Friday**')
    view.focus()
    view.dispatch({ selection: { anchor: from, head: from + '**Friday**'.length } })
  })
  await right.waitForSelector('.cm-ySelection', { timeout: QUICK })
  await waitForStatus(left, { sync: 'synced' })
  await waitForStatus(right, { sync: 'synced' })
  const shots = await Promise.all([left, right].map((p) => p.screenshot()))
  const context = await browser.newContext({ viewport: { width: 1576, height: 600 }, deviceScaleFactor: 1 })
  try {
    const page = await context.newPage()
    const img = (png) => `<img src="data:image/png;base64,${png.toString('base64')}">`
    await page.setContent(`<body style="margin:0;background:#dcdad3;display:flex;gap:16px;padding:20px;
      box-sizing:border-box;height:100vh;align-items:flex-start">
      <style>img{border-radius:10px;box-shadow:0 4px 18px rgba(0,0,0,.18);width:760px;display:block}</style>
      ${shots.map(img).join('')}</body>`)
    await page.waitForFunction(() => [...document.images].every((i) => i.complete))
    const dir = path.join(REPO, 'tests', 'browser', 'screenshots')
    mkdirSync(dir, { recursive: true })
    await page.screenshot({ path: path.join(dir, 'two-windows.png') })
    if (process.env.UPDATE_SCREENSHOT) {
      await page.screenshot({ path: path.join(REPO, 'docs', 'screenshot.png') })
    }
  } finally {
    await context.close()
  }
}
