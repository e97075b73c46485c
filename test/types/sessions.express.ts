// docs/state.md, "Sessions": the express-session snippet, as a strict NodeNext app writes it.
import express from 'express'
import session from 'express-session'
import { createCluster } from 'chorus'

const cluster = await createCluster()
const secret = 'a secret of at least sixteen characters'
const app = express()
app.use(session({ store: cluster.sessions.store({ session }), secret, resave: false, saveUninitialized: false,
                  cookie: { maxAge: 86_400_000 } }))
app.use(session({ store: cluster.sessions.store(), secret }))

declare module 'express-session' {
  interface SessionData {
    user: string
  }
}
app.get('/me', (req, res) => {
  req.session.user = 'alice'
  res.json({ user: req.session.user })
})
