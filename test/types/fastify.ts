// docs/guide.md, "Express and Fastify": chorus/fastify as a strict NodeNext app writes it.
import Fastify from 'fastify'
import { createCluster, fastifyServeArea, useCluster } from 'chorus/fastify'

const cluster = await createCluster()
const app = Fastify()
const chorus = useCluster(app, cluster, { session: { secret: process.env.SESSION_SECRET ?? 'a secret of at least thirty-two characters', cookie: { maxAge: 86_400_000 } } })
await app.register(fastifyServeArea(cluster.files.area('uploads'), { prefix: '/uploads' }))
app.get('/me', async (request) => ({ session: request.session.sessionId, store: chorus.store?.name }))
await app.listen({ port: 8080 })
