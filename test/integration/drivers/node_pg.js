'use strict'
// node-postgres (npm `pg`) named queries through pgtenant, for test_drivers.py.
// Every client runs the same named statements ({name, text, values}), most
// in autocommit, every tenth pair inside BEGIN/COMMIT; every row must come
// from the client's own tenant.  Prints a JSON summary on stdout.
//   node node_pg.js '{"port": 6432, "password": "...", "tenants": ["acme"], "clients": 10,
//                     "iterations": 200, "items": 20, "seconds": 60}'
// PGTENANT_NPM_DIR names the directory whose node_modules holds `pg`.
const cfg = JSON.parse(process.argv[2])
const pg = require(require.resolve('pg', { paths: [process.env.PGTENANT_NPM_DIR] }))

const ONE = 'select owner, id, current_setting(\'app.tenant_id\') as tid from drv_items where id = $1'
const RANGE = 'select owner, id, current_setting(\'app.tenant_id\') as tid from drv_items ' +
              'where id between $1 and $1 + 2 order by id'
const deadline = Date.now() + cfg.seconds * 1000
// a driver that reports a failure outside any query (a FATAL on an idle
// connection) counts it as an error instead of dying without a summary
process.on('uncaughtException', e => error('uncaught', e))
process.on('unhandledRejection', e => error('unhandled', e))
const summary = { expected: cfg.clients * cfg.iterations, ok: 0, errors: 0, error_samples: [],
                  wrong: 0, wrong_samples: [] }

function error(where, e) {
  summary.errors++
  if (summary.error_samples.length < 10)
    summary.error_samples.push(`${where}: ${e.code || ''} ${e.message}`)
}

// null if rows are `count` rows of ids first.. from `tenant`, else what is wrong
function verify(tenant, rows, first, count) {
  const ok = rows.length === count && rows.every((r, k) =>
    r.owner === tenant && r.tid === tenant && r.id === first + k)
  return ok ? null : `wanted ${count} rows from id ${first} of ${tenant}: ${JSON.stringify(rows)}`
}

function tally(where, bad) {
  if (!bad)
    return summary.ok++
  summary.wrong++
  if (summary.wrong_samples.length < 10)
    summary.wrong_samples.push(`${where}: ${bad}`)
}

async function worker(tenant, n) {
  const client = new pg.Client({ host: '127.0.0.1', port: cfg.port, user: `app.${tenant}`,
                                 password: cfg.password, database: 'appdb' })
  client.on('error', e => error(`${tenant}/${n} idle`, e))
  try {
    await client.connect()
  } catch (e) {
    return error(`${tenant}/${n} connect`, e)
  }
  let failures = 0
  for (let i = 0; i < cfg.iterations; i++) {
    const where = `${tenant}/${n}/${i}`
    if (Date.now() > deadline) {
      error(where, new Error('deadline passed'))
      break
    }
    const id = (n * 7 + i) % cfg.items + 1
    try {
      if (i % 10 === 9) {
        const first = Math.min(id, cfg.items - 2)
        await client.query('begin')
        const a = await client.query({ name: 'one', text: ONE, values: [id] })
        const b = await client.query({ name: 'range', text: RANGE, values: [first] })
        await client.query('commit')
        tally(where, verify(tenant, a.rows, id, 1) || verify(tenant, b.rows, first, 3))
      } else {
        const r = await client.query({ name: 'one', text: ONE, values: [id] })
        tally(where, verify(tenant, r.rows, id, 1))
      }
    } catch (e) {
      error(where, e)
      await client.query('rollback').catch(() => null)
      if (++failures >= 20)
        break
    }
  }
  await client.end().catch(() => null)
}

// a driver stuck waiting for a reply still reports, as an error, when time is up
let unfinished = 0
function report() {
  process.stdout.write(JSON.stringify(summary) + '\n')
}
const watchdog = setTimeout(() => {
  error('watchdog', new Error(`${unfinished} workers still waiting after ${cfg.seconds} s`))
  report()
  process.exit(0)
}, cfg.seconds * 1000)

async function main() {
  const work = []
  for (let n = 0; n < cfg.clients; n++)
    work.push(worker(cfg.tenants[n % cfg.tenants.length], n))
  unfinished = work.length
  await Promise.all(work.map(w => w.finally(() => unfinished--)))
  clearTimeout(watchdog)
  report()
}

main().catch(e => {
  clearTimeout(watchdog)
  process.stdout.write(JSON.stringify({ fatal: String((e && e.stack) || e) }) + '\n')
  process.exitCode = 1
})
