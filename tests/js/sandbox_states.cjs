// The JS `e2b` SDK against the gateway around sandbox states: `node sandbox_states.cjs <scenario>`
// with scenario `killed` (a kill mid-stream, isRunning after kill and pause, kill of unknown
// ids), `auto_resume` (traffic wakes a paused sandbox created with autoResume) or `signed`
// (download/upload URLs fetched with no headers). Configuration comes from E2B_API_URL,
// E2B_SANDBOX_URL, E2B_DOMAIN and E2B_API_KEY, as a user's code would get it. Prints one JSON
// line with what it saw; the tests under tests/e2e check it.
const { Sandbox } = require('e2b')

async function killed() {
  const out = {}
  const sbx = await Sandbox.create({ timeoutMs: 120_000 })
  let killing
  try {
    await sbx.commands.run('echo started; sleep 60', {
      timeoutMs: 90_000,
      onStdout: () => {
        killing = killing || Sandbox.kill(sbx.sandboxId)
      },
    })
    out.raised = null
  } catch (error) {
    out.raised = { name: error.name, message: String(error.message) }
  }
  out.killed = await killing
  out.runningAfterKill = await sbx.isRunning({ requestTimeoutMs: 10_000 })
  out.killUnknown = await Sandbox.kill('nonexistingsandbox')
  out.killMalformed = await Sandbox.kill('bad-id')
  const paused = await Sandbox.create({ timeoutMs: 120_000 })
  try {
    await paused.pause()
    out.runningAfterPause = await paused.isRunning({ requestTimeoutMs: 10_000 })
    await Sandbox.connect(paused.sandboxId)
    out.runningAfterConnect = await paused.isRunning({ requestTimeoutMs: 10_000 })
  } finally {
    await paused.kill()
  }
  return out
}

async function autoResume() {
  const out = {}
  const sbx = await Sandbox.create({
    timeoutMs: 120_000,
    lifecycle: { onTimeout: 'pause', autoResume: true },
  })
  const plain = await Sandbox.create({ timeoutMs: 120_000 })
  try {
    await sbx.pause()
    out.stateAfterPause = (await sbx.getInfo()).state
    const run = await sbx.commands.run('echo woke')
    out.stdout = run.stdout
    out.stateAfterRun = (await sbx.getInfo()).state
    await plain.pause()
    try {
      await plain.commands.run('echo never')
      out.plainRaised = null
    } catch (error) {
      out.plainRaised = { name: error.name, message: String(error.message) }
    }
  } finally {
    await sbx.kill()
    await plain.kill()
  }
  return out
}

async function signed() {
  const out = {}
  const sbx = await Sandbox.create({ timeoutMs: 120_000 })
  try {
    await sbx.files.write('signed/from-js.txt', 'signed in js')
    const download = await sbx.downloadUrl('signed/from-js.txt', { useSignatureExpiration: 60 })
    out.downloadHasId = download.includes(sbx.sandboxId)
    const got = await fetch(download)
    out.download = { status: got.status, body: await got.text() }
    const upload = await sbx.uploadUrl('signed/up.txt')
    const form = new FormData()
    form.append('file', new Blob(['uploaded from js']), 'up.txt')
    const put = await fetch(upload, { method: 'POST', body: form })
    out.uploadStatus = put.status
    out.uploaded = await sbx.files.read('signed/up.txt')
    const forged = new URL(download)
    forged.searchParams.set('path', 'signed/up.txt')
    const refused = await fetch(forged)
    out.forged = { status: refused.status, body: await refused.json() }
  } finally {
    await sbx.kill()
  }
  return out
}

const scenarios = { killed, auto_resume: autoResume, signed }

async function main() {
  const scenario = scenarios[process.argv[2]]
  if (!scenario) throw new Error(`unknown scenario ${process.argv[2]}`)
  console.log(JSON.stringify(await scenario()))
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
