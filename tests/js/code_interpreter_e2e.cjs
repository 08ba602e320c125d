// The JS `@e2b/code-interpreter` SDK against the gateway: a code-interpreter-v1 sandbox, a
// matplotlib chart, a DataFrame's data, Bash with envs, and the error for a language without
// a kernel. Configuration comes from E2B_API_URL, E2B_SANDBOX_URL, E2B_DOMAIN and
// E2B_API_KEY, as a user's code would get it. Prints one JSON line with what it saw;
// tests/e2e/test_code_interpreter_js.py runs it with node and checks that line.
const { Sandbox } = require('@e2b/code-interpreter')

const CHART = [
  'import matplotlib.pyplot as plt',
  "plt.bar(['a', 'b'], [1, 2], label='n')",
  "plt.title('From JS')",
  'plt.show()',
].join('\n')

async function main() {
  const sbx = await Sandbox.create({ timeoutMs: 120_000, envs: { SANDBOX_VAR: 'from-create' } })
  const out = {}
  try {
    const sum = await sbx.runCode('1+1')
    out.text = sum.text
    const chart = await sbx.runCode(CHART, { timeoutMs: 120_000 })
    const [figure] = chart.results
    out.png = typeof figure.png === 'string' && figure.png.startsWith('iVBORw0KGgo')
    out.chart = {
      type: figure.chart.type,
      title: figure.chart.title,
      elements: figure.chart.elements.map((e) => [e.label, e.group, e.value]),
    }
    const frame = await sbx.runCode("import pandas as pd\npd.DataFrame({'x': [1, 2]})")
    out.data = frame.results[0].data
    const bash = await sbx.runCode('echo "$SANDBOX_VAR $RUN_VAR"', {
      language: 'bash',
      envs: { RUN_VAR: 'run' },
    })
    out.bash = bash.logs.stdout
    try {
      await sbx.runCode('1', { language: 'r' })
      out.r = 'ran'
    } catch (error) {
      out.r = String(error.message)
    }
  } finally {
    await sbx.kill()
  }
  // Exit once the line is out rather than when the event loop drains: the SDK (2.8.0)
  // leaves runCode's 60 s request timer armed when the reply is an error (the R call), which
  // kept node alive a minute after the work was done.
  process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(0))
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
