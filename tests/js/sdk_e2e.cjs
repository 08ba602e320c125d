// The JS `e2b` SDK against the gateway: create, run, files, list (metadata filter and pages),
// getInfo, setTimeout, kill. Configuration comes from E2B_API_URL, E2B_SANDBOX_URL, E2B_DOMAIN
// and E2B_API_KEY, as a user's code would get it. Prints one JSON line with what it saw;
// tests/e2e/test_js_sdk.py runs it with node and checks that line.
const { Sandbox } = require('e2b')

async function main() {
  const tag = `js-${Date.now()}`
  const sbx = await Sandbox.create({ metadata: { suite: tag }, timeoutMs: 120_000 })
  const extra = await Sandbox.create({ metadata: { suite: tag }, timeoutMs: 120_000 })
  const out = {}
  try {
    const run = await sbx.commands.run('echo from-js; pwd')
    out.stdout = run.stdout
    out.exitCode = run.exitCode
    await sbx.files.write('js/hello.txt', 'hello from js')
    out.read = await sbx.files.read('js/hello.txt')
    out.listed = (await sbx.files.list('js')).map((entry) => entry.name)
    const info = await sbx.getInfo()
    out.infoId = info.sandboxId === sbx.sandboxId
    out.metadata = info.metadata
    await sbx.setTimeout(200_000)
    const later = await sbx.getInfo()
    out.extended = later.endAt > info.endAt
    const paginator = Sandbox.list({ query: { metadata: { suite: tag } }, limit: 1 })
    const pages = []
    while (paginator.hasNext) {
      pages.push((await paginator.nextItems()).map((item) => item.sandboxId))
    }
    out.pages = pages.length
    out.paged = pages.flat().sort().join(',') === [sbx.sandboxId, extra.sandboxId].sort().join(',')
    out.runningBeforeKill = await sbx.isRunning()
  } finally {
    await sbx.kill()
    await extra.kill()
  }
  out.runningAfterKill = await sbx.isRunning()
  console.log(JSON.stringify(out))
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
