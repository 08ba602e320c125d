// The matrix scenario for the JS `e2b` SDK: create, commands.run, files write/read, a pty
// (create, send input, read its output, kill), list, kill; the same steps as e2b_sdk.py.
// Run by node with NODE_PATH at one release's node_modules and the gateway's E2B_*
// environment. Prints one JSON line, {"versions", "steps", "failed"}: the first step that
// throws ends the run and is named in `failed`, so the test says which step broke.
const fs = require('node:fs')
const path = require('node:path')
const { CommandExitError, Sandbox } = require('e2b')

// Shell arithmetic: the marker only appears once bash ran the line, not in its echo.
const PTY_INPUT = 'echo pty-$((6 * 7))\n'
const PTY_MARKER = 'pty-42'

function installedVersion(name) {
  // The package's entry point is <root>/dist/index.js; its package.json may not be exported.
  const root = path.dirname(path.dirname(require.resolve(name)))
  return JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).version
}

async function main() {
  const tag = `sdk-matrix-${Date.now()}-${process.pid}`
  const report = { versions: { e2b: installedVersion('e2b') }, steps: {}, failed: null }
  let sandbox = null
  let killed = false
  const steps = [
    ['create', async () => {
      sandbox = await Sandbox.create({ metadata: { suite: tag }, timeoutMs: 120_000 })
      return { running: await sandbox.isRunning() }
    }],
    ['commands.run', async () => {
      const result = await sandbox.commands.run('echo matrix; pwd')
      return { stdout: result.stdout, exit_code: result.exitCode }
    }],
    ['files', async () => {
      await sandbox.files.write('matrix/hello.txt', 'hello matrix')
      return {
        read: await sandbox.files.read('matrix/hello.txt'),
        listed: (await sandbox.files.list('matrix')).map((entry) => entry.name),
      }
    }],
    ['pty', async () => {
      let seen = ''
      let markerSeen
      const marker = new Promise((resolve) => { markerSeen = resolve })
      const decoder = new TextDecoder()
      const handle = await sandbox.pty.create({
        cols: 80,
        rows: 24,
        timeoutMs: 60_000,
        onData: (data) => {
          seen += decoder.decode(data, { stream: true })
          if (seen.includes(PTY_MARKER)) markerSeen()
        },
      })
      await sandbox.pty.sendInput(handle.pid, new TextEncoder().encode(PTY_INPUT))
      const timedOut = new Promise((resolve) => setTimeout(resolve, 30_000).unref())
      await Promise.race([marker, timedOut])
      const ptyKilled = await sandbox.pty.kill(handle.pid)
      let exitCode
      try {
        exitCode = (await handle.wait()).exitCode
      } catch (error) {
        if (!(error instanceof CommandExitError)) throw error
        exitCode = error.exitCode
      }
      const running = (await sandbox.commands.list()).map((p) => p.pid)
      return {
        output: seen.includes(PTY_MARKER),
        killed: ptyKilled,
        ended_nonzero: exitCode !== 0,
        listed_after_kill: running.includes(handle.pid),
      }
    }],
    ['list', async () => {
      const paginator = Sandbox.list({ query: { metadata: { suite: tag } } })
      const ids = []
      while (paginator.hasNext) {
        ids.push(...(await paginator.nextItems()).map((info) => info.sandboxId))
      }
      return { ids: ids.map((id) => (id === sandbox.sandboxId ? '<this sandbox>' : id)) }
    }],
    ['kill', async () => {
      // The instance kill resolves to nothing: only a failure throws.
      await sandbox.kill()
      killed = true
      return {
        killed: true,
        running_after: await sandbox.isRunning(),
        kill_again: await Sandbox.kill(sandbox.sandboxId),
      }
    }],
  ]
  try {
    for (const [name, action] of steps) {
      try {
        report.steps[name] = await action()
      } catch (error) {
        console.error(error)
        report.failed = { step: name, error: `${error.name}: ${error.message}` }
        break
      }
    }
  } finally {
    if (sandbox !== null && !killed) {
      await Sandbox.kill(sandbox.sandboxId).catch((error) => console.error(error))
    }
  }
  console.log(JSON.stringify(report))
  process.exitCode = report.failed === null ? 0 : 1
}

main().catch((error) => {
  console.error(error)
  process.exit(2)
})
