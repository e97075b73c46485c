/**
 * Loads a package the application installed (express-session, @fastify/session, …) that Chorus
 * uses without depending on it: resolved from the application's directory first, then from
 * Chorus's own, so an application's copy wins and a hoisted one is found.
 */
import { createRequire } from 'node:module'
import { join } from 'node:path'

/** The package, or the first reason it could not be loaded. */
export function loadPeer(name: string): { module: unknown } | { error: string } {
  const errors: string[] = []
  for (const from of [join(process.cwd(), 'index.js'), import.meta.url]) {
    try {
      return { module: createRequire(from)(name) as unknown }
    } catch (err) {
      errors.push((err as Error).message.split('\n')[0]!)
    }
  }
  return { error: errors[0] ?? 'not found' }
}
