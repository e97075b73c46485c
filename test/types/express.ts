// docs/guide.md, "Express and Fastify": chorus/express as a strict NodeNext app writes it.
import express from 'express'
import { createServer } from 'node:http'
import { createCluster, handleSignals, serveArea, useCluster } from 'chorus/express'

const cluster = await createCluster()
const app = express()
const chorus = useCluster(app, cluster, {
  session: { secret: process.env.SESSION_SECRET ?? 'a development secret', resave: false, saveUninitialized: false, cookie: { maxAge: 86_400_000 } },
  realtime: { authorize: (principal) => principal !== null },
})
app.use('/uploads', serveArea(cluster.files.area('uploads'), { maxAgeSeconds: 60 }))
app.get('/me', (req, res) => {
  res.json({ user: (req.session as unknown as { user?: string }).user ?? null })
})
const server = app.listen(8080)
console.log(chorus.store?.name, server.listening)

// A server made by the application, and the signals wired by hand.
const other = express()
const wired = useCluster(other, cluster, { signals: false, metrics: '/internal/metrics' })
const own = createServer(other)
wired.attach(own)
const off = handleSignals(cluster, { timeoutMs: 30_000, servers: [own] })
off()
