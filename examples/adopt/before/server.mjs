// A small Express 5 app: sessions, a hit counter, a report every second, a price cache, uploads.
// before/ runs as one instance; after/ is the same app on a Chorus cluster (see ../README.md).
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import express from 'express'
import session from 'express-session'

const out = (line) => console.log(JSON.stringify(line))
const pricesFile = process.env.PRICES_FILE ?? 'prices.json' // the "database"
const loadPrice = async (item) => JSON.parse(await readFile(pricesFile, 'utf8'))[item] ?? null
await mkdir('uploads', { recursive: true })

const app = express()
app.use(session({ secret: process.env.SESSION_SECRET ?? 'a development secret', resave: false, saveUninitialized: false }))
let hits = 0
const prices = new Map()
setInterval(() => out({ type: 'report', tick: new Date() }), 1000)

app.post('/login', (req, res) => {
  req.session.user = req.query.user
  res.json({ ok: true })
})
app.get('/me', (req, res) => res.json({ user: req.session.user ?? null }))

app.post('/hits', async (req, res) => res.json({ hits: ++hits }))

app.get('/prices/:item', async (req, res) => {
  if (!prices.has(req.params.item)) prices.set(req.params.item, await loadPrice(req.params.item))
  res.json({ price: prices.get(req.params.item) })
})
app.put('/prices/:item', express.json(), async (req, res) => {
  const all = JSON.parse(await readFile(pricesFile, 'utf8'))
  await writeFile(pricesFile, JSON.stringify({ ...all, [req.params.item]: req.body.price }))
  prices.delete(req.params.item)
  res.json({ ok: true })
})

app.put('/uploads/:name', express.raw({ type: () => true, limit: '10mb' }), async (req, res) => {
  await writeFile(`uploads/${req.params.name}`, req.body)
  res.json({ ok: true })
})
app.use('/uploads', express.static('uploads'))

const server = app.listen(Number(process.env.PORT ?? 3000), () => out({ type: 'ready', port: server.address().port }))
