// Bundles the editor into dist/, which `cargo build` embeds into the tandem binary
// (crates/gateway/build.rs). Layout of dist/:
//   index.html           the start page (served at /)
//   editor.html          the editor (served at /d/<doc-id>)
//   assets/<name>-<hash>.{js,css}   content-hashed, cached forever by browsers
//   assets/*.gz          gzip variants, served when the browser accepts gzip
// `node build.mjs --watch` rebuilds on change (then restart `cargo run` to re-embed).

import * as esbuild from 'esbuild'
import { mkdir, readFile, rm, writeFile, readdir } from 'node:fs/promises'
import { gzipSync, constants as zlib } from 'node:zlib'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const src = path.join(here, 'src')
const dist = path.join(here, 'dist')
const assets = path.join(dist, 'assets')
const watch = process.argv.includes('--watch')

/** Pages: html template in src/ -> file in dist/, with the bundles it loads. */
const pages = [
  { template: 'index.html', out: 'index.html', script: 'start' },
  { template: 'editor.html', out: 'editor.html', script: 'editor' }
]

const options = {
  entryPoints: {
    start: path.join(src, 'start.js'),
    editor: path.join(src, 'editor.js'),
    style: path.join(src, 'style.css')
  },
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
  outdir: assets,
  entryNames: '[name]-[hash]',
  metafile: true,
  legalComments: 'none',
  logLevel: 'warning'
}

/** Maps entry name (start, editor, style) to its hashed public URL. */
function entryUrls (metafile) {
  const urls = {}
  for (const [file, out] of Object.entries(metafile.outputs)) {
    if (!out.entryPoint) continue
    const name = path.basename(out.entryPoint).replace(/\.(js|css)$/, '')
    const key = name === 'start' || name === 'editor' ? name : 'style'
    urls[key] = '/assets/' + path.basename(file)
  }
  return urls
}

async function writePages (metafile) {
  const urls = entryUrls(metafile)
  for (const page of pages) {
    const html = (await readFile(path.join(src, page.template), 'utf8'))
      .replaceAll('{{style}}', urls.style)
      .replaceAll('{{script}}', urls[page.script])
    await writeFile(path.join(dist, page.out), html)
  }
}

/** Writes a .gz next to every compressible asset; the server picks it when accepted. */
async function gzipAssets () {
  for (const name of await readdir(assets)) {
    if (!/\.(js|css)$/.test(name)) continue
    const body = await readFile(path.join(assets, name))
    const gz = gzipSync(body, { level: zlib.Z_BEST_COMPRESSION })
    await writeFile(path.join(assets, name + '.gz'), gz)
  }
}

await rm(dist, { recursive: true, force: true })
await mkdir(assets, { recursive: true })

if (watch) {
  const ctx = await esbuild.context({
    ...options,
    minify: false,
    plugins: [{
      name: 'pages',
      setup (build) {
        build.onEnd(async (result) => {
          if (result.metafile) await writePages(result.metafile)
          console.log('built', new Date().toLocaleTimeString())
        })
      }
    }]
  })
  await ctx.watch()
} else {
  const result = await esbuild.build(options)
  await writePages(result.metafile)
  await gzipAssets()
  const sizes = Object.entries(result.metafile.outputs)
    .map(([file, out]) => `  ${path.relative(here, file)}  ${(out.bytes / 1024).toFixed(1)} KiB`)
  console.log('web/dist built:\n' + sizes.join('\n'))
}
