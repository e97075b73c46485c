import { describeSessionApp } from '../helpers/session-app.js'

describeSessionApp('express-session', new URL('../fixtures/sessions-express.mjs', import.meta.url).pathname, 'default')
