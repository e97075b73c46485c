/**
 * completeJob: marks one job complete inside a `transactional` handler's transaction, only while
 * this claim (id and epoch) still holds it, so the handler's writes commit with it or not at all.
 */
import { tag, type Client, type SchemaName } from './client.js'

export interface CompleteJob {
  id: string
  claimId: string
  epoch: number
}

/** True when the claim still held the job (and it is now complete in `tx`). */
export async function completeJob(tx: Client, s: SchemaName, { id, claimId, epoch }: CompleteJob): Promise<boolean> {
  const done = await tag(tx)<{ id: string }[]>`
            update ${s}.jobs set state = 'completed', finished_at = now(), claim_id = null
            where id = ${id} and claim_id = ${claimId} and claimed_epoch = ${epoch} and state = 'running'
            returning id`
  return done.length > 0
}
