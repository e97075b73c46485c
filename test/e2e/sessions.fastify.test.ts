import { describeSessionApp } from '../helpers/session-app.js'

describeSessionApp('@fastify/session', new URL('../fixtures/sessions-fastify.mjs', import.meta.url).pathname, 'fastify')
