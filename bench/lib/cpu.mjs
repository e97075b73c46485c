// CPU time of one process by pid, from /proc (Linux): the broker rows' "store CPU per message".
import { readFileSync } from 'node:fs'

/** CPU time (user + system, ms) used so far by process `pid`; null when unknown (no /proc, gone). */
export function processCpuMs(pid) {
  if (!pid) return null
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the parenthesised command: state ppid … utime(14) stime(15), counted from 1.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return ((Number(f[11]) + Number(f[12])) * 1000) / 100 // USER_HZ is 100 on Linux
  } catch {
    return null
  }
}
