// The fuzz targets by name, each { arb, check, async, describe, close }: `stomp` (the frame parser),
// `http` (the balancer's server fed in-process) and `http-socket` (the same over loopback sockets:
// slower, but the parser then reads the socket as in production, without a JavaScript stream in
// between) and `balancer` (the real balancer and an upstream, over loopback sockets).
import { balancerTarget, describeHttpInput, httpInput, inProcessTarget, loopbackTarget, runHttpInput } from './http.mjs'
import { describeStompInput, stompCheck, stompInput } from './stomp.mjs'

/** `parser` is the STOMP parser module and `balancer` the balancer module (src/ in the suite, dist/ from the command line). */
export async function makeTarget(name, { parser, balancer, deadlineMs = 2000 } = {}) {
  switch (name) {
    case 'stomp':
      return { arb: stompInput, check: stompCheck(parser), async: false, describe: describeStompInput, close: () => undefined, stats: () => null }
    case 'http':
    case 'http-socket':
    case 'balancer': {
      const server = name === 'http' ? inProcessTarget() : name === 'http-socket' ? await loopbackTarget() : await balancerTarget(balancer)
      return {
        arb: httpInput,
        check: async (input) => {
          const outcome = await runHttpInput(server, input, deadlineMs)
          if (server.errors.length > 0) throw server.errors.shift()
          return outcome
        },
        async: true,
        describe: describeHttpInput,
        close: () => server.close(),
        stats: () => server.stats,
      }
    }
    default:
      throw new Error(`unknown fuzz target ${name}`)
  }
}
