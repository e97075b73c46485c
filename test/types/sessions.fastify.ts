// docs/state.md, "Sessions": the @fastify/session snippet, as a strict NodeNext app writes it.
import fastifyCookie from '@fastify/cookie'
import fastifySession from '@fastify/session'
import Fastify from 'fastify'
import { createCluster } from 'chorus'

const cluster = await createCluster()
const secret = 'a secret of at least thirty-two characters long'
const fastify = Fastify()
await fastify.register(fastifyCookie)
await fastify.register(fastifySession, { store: cluster.sessions.store(), secret, cookie: { maxAge: 86_400_000 } })
