// How the binary serves the embedded editor: pages, assets, content types, caching.
// Plain HTTP against the real tandem binary; no browser needed.

import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { TandemServer, assertEditorEmbedded } from './harness.mjs'

let server

before(async () => {
  server = await new TandemServer().start()
  await assertEditorEmbedded(server)
})

after(async () => {
  await server?.dispose()
})

/** The hashed script and stylesheet URLs a page links to. */
async function assetUrls (pathname) {
  const html = await (await fetch(server.url(pathname))).text()
  return [...html.matchAll(/(?:src|href)="(\/assets\/[^"]+)"/g)].map((m) => m[1])
}

test('the start page and the editor are html that browsers revalidate', async () => {
  for (const pathname of ['/', '/d/some-doc', '/d/Team.notes_2']) {
    const res = await fetch(server.url(pathname))
    assert.equal(res.status, 200, pathname)
    assert.equal(res.headers.get('content-type'), 'text/html; charset=utf-8', pathname)
    assert.equal(res.headers.get('cache-control'), 'no-cache', pathname)
    assert.match(res.headers.get('etag') ?? '', /^"[0-9a-f]+"$/, pathname)
  }
  assert.match(await (await fetch(server.url('/'))).text(), /Start a new document/)
  assert.match(await (await fetch(server.url('/d/x'))).text(), /id="editor"/)
})

test('an unchanged page answers 304 to If-None-Match', async () => {
  const first = await fetch(server.url('/'))
  const etag = first.headers.get('etag')
  const again = await fetch(server.url('/'), { headers: { 'if-none-match': etag } })
  assert.equal(again.status, 304)
  assert.equal(again.headers.get('etag'), etag)
})

test('hashed assets have their content type, cache forever, and come gzipped when accepted', async () => {
  const urls = await assetUrls('/d/x')
  assert.equal(urls.length, 2, 'one stylesheet and one script')
  for (const url of urls) {
    const type = url.endsWith('.js') ? 'text/javascript; charset=utf-8' : 'text/css; charset=utf-8'
    const plain = await fetch(server.url(url), { headers: { 'accept-encoding': 'identity' } })
    assert.equal(plain.status, 200, url)
    assert.equal(plain.headers.get('content-type'), type, url)
    assert.equal(plain.headers.get('cache-control'), 'public, max-age=31536000, immutable', url)
    assert.equal(plain.headers.get('content-encoding'), null, url)
    const body = await plain.text()

    // fetch() decodes gzip transparently: the same text must come back, smaller on the wire.
    const gz = await fetch(server.url(url), { headers: { 'accept-encoding': 'gzip' } })
    assert.equal(gz.headers.get('content-encoding'), 'gzip', url)
    assert.ok(Number(gz.headers.get('content-length')) < body.length, url)
    assert.equal(await gz.text(), body, url)
  }
})

test('unknown assets and other paths are 404', async () => {
  for (const pathname of ['/assets/nope.js', '/assets/', '/d/', '/d/a/b', '/nothing-here']) {
    const res = await fetch(server.url(pathname))
    assert.equal(res.status, 404, pathname)
  }
  // The gzip variants are served in place of their originals, never by their own name.
  const [script] = (await assetUrls('/d/x')).filter((u) => u.endsWith('.js'))
  assert.equal((await fetch(server.url(script + '.gz'))).status, 404)
})
