// Reads a server-sent event stream with fetch, as a browser's EventSource would, and waits for
// events matching a predicate.

export interface SseEvent {
  readonly event: string
  readonly data: unknown
  readonly at: number
}

export class SseReader {
  readonly events: SseEvent[] = []
  readonly #abort = new AbortController()
  #waiters: { pred: (e: SseEvent) => boolean; resolve: (e: SseEvent) => void }[] = []
  #ended: Error | null = null

  static async open(url: string, headers: Record<string, string>): Promise<{ reader: SseReader; status: number; contentType: string | null }> {
    const reader = new SseReader()
    const res = await fetch(url, { headers: { accept: 'text/event-stream', ...headers }, signal: reader.#abort.signal })
    if (res.ok && res.body) void reader.#pump(res.body)
    else await res.body?.cancel()
    return { reader, status: res.status, contentType: res.headers.get('content-type') }
  }

  async #pump(body: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder()
    let buf = ''
    try {
      for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
        buf += decoder.decode(chunk, { stream: true })
        let i: number
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const frame = buf.slice(0, i)
          buf = buf.slice(i + 2)
          let event = 'message'
          const data: string[] = []
          for (const line of frame.split('\n')) {
            if (line.startsWith('event: ')) event = line.slice(7)
            else if (line.startsWith('data: ')) data.push(line.slice(6))
          }
          if (data.length === 0) continue
          const e = { event, data: JSON.parse(data.join('\n')) as unknown, at: Date.now() }
          this.events.push(e)
          for (const w of [...this.#waiters]) {
            if (w.pred(e)) {
              this.#waiters.splice(this.#waiters.indexOf(w), 1)
              w.resolve(e)
            }
          }
        }
      }
      this.#ended = new Error('the stream ended')
    } catch (err) {
      this.#ended = err as Error
    }
  }

  /** The first event (already received or future) matching `pred`. */
  next(pred: (e: SseEvent) => boolean, timeoutMs: number, what: string): Promise<SseEvent> {
    const found = this.events.find(pred)
    if (found) return Promise.resolve(found)
    if (this.#ended) return Promise.reject(new Error(`${what}: ${this.#ended.message}`))
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w.resolve !== done)
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`))
      }, timeoutMs)
      const done = (e: SseEvent) => {
        clearTimeout(timer)
        resolve(e)
      }
      this.#waiters.push({ pred, resolve: done })
    })
  }

  close(): void {
    this.#abort.abort()
  }
}
