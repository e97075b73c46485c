// A CommonJS consumer (.cts under NodeNext) of the README's basics: require('chorus') is typed too.
import chorus = require('chorus')
import type { Cluster, ClusterOptions } from 'chorus' with { 'resolution-mode': 'import' }

async function main(): Promise<void> {
  const options: ClusterOptions = { databaseUrl: process.env.DATABASE_URL, instanceId: 'api-1', secret: process.env.CHORUS_SECRET }
  const cluster: Cluster = await chorus.createCluster(options)
  cluster.members.list()
  cluster.on('member:down', ({ member }) => console.log(member.instanceId))
  const visits: number = await cluster.map<number>('counters').increment('visits')
  console.log(visits, cluster.members.signal.aborted)
  try {
    await cluster.close()
  } catch (err) {
    if (chorus.isChorusError(err)) console.log(err.code)
  }
}
void main()

// The framework helpers from CommonJS.
import onExpress = require('chorus/express')
import onFastify = require('chorus/fastify')
export const helpers: [typeof onExpress.useCluster, typeof onFastify.useCluster, typeof onExpress.handleSignals] = [onExpress.useCluster, onFastify.useCluster, onExpress.handleSignals]
