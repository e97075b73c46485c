/** Processes of this machine by pid: whether one is alive, and signals to one or to its process group. */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    // EPERM: it exists but belongs to another user.
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** Sends `signal` to `pid`, or with `group` to its process group; false when there is no such process (or group). */
export function signal(pid: number | undefined, sig: NodeJS.Signals, group = false): boolean {
  if (pid === undefined) return false
  try {
    process.kill(group ? -pid : pid, sig)
    return true
  } catch {
    return false
  }
}
