'use strict'
// postgres.js (npm `postgres`, default `prepare: true`) through pgtenant, for
// test_drivers.py.  One postgres.js pool per tenant (`connections` server
// connections as the driver sees them); `workers` async workers per tenant run
// queries at once, so postgres.js pipelines them on its connections; every
// tenth iteration is a sql.begin() transaction of two statements.  Every row
// must come from the client's own tenant.  Prints a JSON summary on stdout.
//   node postgresjs.js postgres '{"port": 6432, "password": "...", "tenants": ["acme"],
//                                 "connections": 3, "workers": 10, "iterations": 100,
//                                 "items": 20, "seconds": 60}'
// The first argument is the package to load (`postgres`, or an alias such as
// `postgres4`) from PGTENANT_NPM_DIR's node_modules.
const fs = require('fs')
const path = require('path')
const { pathToFileURL } = require('url')
const pkg = process.argv[2]
const cfg = JSON.parse(process.argv[3])

const deadline = Date.now() + cfg.seconds * 1000
// a driver that reports a failure outside any query (a FATAL on an idle
// connection) counts it as an error instead of dying without a summary
process.on('uncaughtException', e => error('uncaught', e))
process.on('unhandledRejection', e => error('unhandled', e))
const summary = { expected: cfg.tenants.length * cfg.workers * cfg.iterations, ok: 0, errors: 0,
                  error_samples: [], wrong: 0, wrong_samples: [], version: null }

function error(where, e) {
  summary.errors++
  if (summary.error_samples.length < 10)
    summary.error_samples.push(`${where}: ${e.code || ''} ${e.message}`)
}

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

async function worker(sql, tenant, n) {
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
        const [a, b] = await sql.begin(async tx => [
          await tx`select owner, id, current_setting('app.tenant_id') as tid from drv_items where id = ${id}`,
          await tx`select owner, id, current_setting('app.tenant_id') as tid from drv_items
                   where id between ${first} and ${first} + 2 order by id`
        ])
        tally(where, verify(tenant, a, id, 1) || verify(tenant, b, first, 3))
      } else {
        const r = await sql`select owner, id, current_setting('app.tenant_id') as tid from drv_items where id = ${id}`
        tally(where, verify(tenant, r, id, 1))
      }
    } catch (e) {
      error(where, e)
      if (++failures >= 20)
        break
    }
  }
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
  const dir = process.env.PGTENANT_NPM_DIR
  const entry = require.resolve(pkg, { paths: [dir] })
  summary.version = JSON.parse(fs.readFileSync(path.join(dir, 'node_modules', pkg, 'package.json'))).version
  const mod = await import(pathToFileURL(entry).href)
  const postgres = mod.default || mod
  const pools = cfg.tenants.map(tenant => postgres({
    host: '127.0.0.1', port: cfg.port, database: 'appdb', username: `app.${tenant}`,
    password: cfg.password, max: cfg.connections, ssl: false, idle_timeout: 0, connect_timeout: 10,
    onnotice: () => null
  }))
  const work = []
  cfg.tenants.forEach((tenant, t) => {
    for (let n = 0; n < cfg.workers; n++)
      work.push(worker(pools[t], tenant, n))
  })
  unfinished = work.length
  await Promise.all(work.map(w => w.finally(() => unfinished--)))
  await Promise.all(pools.map(sql => sql.end({ timeout: 5 }).catch(() => null)))
  clearTimeout(watchdog)
  report()
}

main().catch(e => {
  clearTimeout(watchdog)
  process.stdout.write(JSON.stringify({ fatal: String((e && e.stack) || e) }) + '\n')
  process.exitCode = 1
})
