// A small Express 5 app: sessions, a hit counter, a report every second, a price cache, uploads.
// before/ runs as one instance; after/ is the same app on a Chorus cluster (see ../README.md).
import { readFile, writeFile } from 'node:fs/promises'
import express from 'express'
import { createCluster, useCluster } from 'chorus/express'

const out = (line) => console.log(JSON.stringify(line))
const pricesFile = process.env.PRICES_FILE ?? 'prices.json' // the "database"
const loadPrice = async (item) => JSON.parse(await readFile(pricesFile, 'utf8'))[item] ?? null
const cluster = await createCluster()

const app = express()
useCluster(app, cluster, { session: { secret: process.env.SESSION_SECRET ?? 'a development secret', resave: false, saveUninitialized: false } })
const hits = cluster.map('hits')
const prices = cluster.cache('prices')
cluster.jobs.cron('report', '* * * * * *', ({ tick }) => out({ type: 'report', tick }))

app.post('/login', (req, res) => {
  req.session.user = req.query.user
  res.json({ ok: true })
})
app.get('/me', (req, res) => res.json({ user: req.session.user ?? null }))

app.post('/hits', async (req, res) => res.json({ hits: await hits.increment('n') }))

app.get('/prices/:item', async (req, res) => {
  res.json({ price: await prices.getOrLoad(req.params.item, loadPrice) })
})
app.put('/prices/:item', express.json(), async (req, res) => {
  const all = JSON.parse(await readFile(pricesFile, 'utf8'))
  await writeFile(pricesFile, JSON.stringify({ ...all, [req.params.item]: req.body.price }))
  await prices.delete(req.params.item)
  res.json({ ok: true })
})

app.put('/uploads/:name', express.raw({ type: () => true, limit: '10mb' }), async (req, res) => {
  await cluster.files.area('uploads').write(req.params.name, req.body)
  res.json({ ok: true })
})
app.use('/uploads', cluster.files.area('uploads').serve())

const server = app.listen(Number(process.env.PORT ?? 3000), () => out({ type: 'ready', port: server.address().port }))
