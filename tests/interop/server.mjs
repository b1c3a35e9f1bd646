// Starts and stops the real `tandem` binary for the interop tests.
// The binary comes from TANDEM_BIN (set by `just interop`), else target/debug/tandem.
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
export const bin = process.env.TANDEM_BIN || join(process.env.CARGO_TARGET_DIR || join(repo, 'target'), 'debug', 'tandem')

/** A running tandem server on a temp data dir; restartable on the same port and dir. */
export class TandemServer {
  /** @param {string[]} extraArgs more `serve` flags (e.g. `--auth jwt ...`) */
  constructor (extraArgs = []) {
    this.extraArgs = extraArgs
    this.dataDir = mkdtempSync(join(tmpdir(), 'tandem-interop-'))
    this.listen = '127.0.0.1:0'
    this.child = null
    this.log = ''
  }

  /** Starts the process and resolves once it prints its listening address. */
  async start () {
    const child = spawn(bin, ['serve', '--listen', this.listen, '--data-dir', this.dataDir, ...this.extraArgs], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' }
    })
    this.child = child
    this.exited = new Promise(resolve => child.once('exit', (code, signal) => resolve({ code, signal })))
    const addr = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`tandem did not start within 15 s:\n${this.log}`)), 15000)
      const onData = chunk => {
        this.log += chunk.toString()
        const m = this.log.match(/listening on https?:\/\/([0-9.]+:\d+)/)
        if (m) { clearTimeout(timer); resolve(m[1]) }
      }
      child.stdout.on('data', onData)
      child.stderr.on('data', onData)
      child.once('exit', code => { clearTimeout(timer); reject(new Error(`tandem exited (${code}):\n${this.log}`)) })
    })
    this.listen = addr // a restart reuses the same port so clients reconnect by themselves
    this.wsUrl = `ws://${addr}/ws`
    this.httpUrl = `http://${addr}`
    return this
  }

  /** Sends `signal` and waits for the process to exit; resolves to its exit status. */
  async stop (signal = 'SIGTERM') {
    if (!this.child) return null
    this.child.kill(signal)
    const status = await this.exited
    this.child = null
    return status
  }

  /** Stops the server (if running) and removes its data dir. */
  async dispose () {
    await this.stop('SIGKILL')
    rmSync(this.dataDir, { recursive: true, force: true })
  }
}
