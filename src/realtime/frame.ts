/**
 * STOMP 1.2 frames: the shape, the header escaping rules and the serializer for frames the server
 * sends. CONNECT and CONNECTED frames are never escaped (the specification's exception for 1.0
 * compatibility); every other frame escapes `\r \n : \` in header names and values.
 */

export type ClientCommand =
  | 'CONNECT'
  | 'STOMP'
  | 'SEND'
  | 'SUBSCRIBE'
  | 'UNSUBSCRIBE'
  | 'ACK'
  | 'NACK'
  | 'BEGIN'
  | 'COMMIT'
  | 'ABORT'
  | 'DISCONNECT'

export type ServerCommand = 'CONNECTED' | 'MESSAGE' | 'RECEIPT' | 'ERROR'

export const clientCommands: ReadonlySet<string> = new Set<ClientCommand>([
  'CONNECT', 'STOMP', 'SEND', 'SUBSCRIBE', 'UNSUBSCRIBE', 'ACK', 'NACK', 'BEGIN', 'COMMIT', 'ABORT', 'DISCONNECT',
])

export interface Frame {
  readonly command: ClientCommand
  /** Header names and values, unescaped; the first occurrence of a repeated header wins. */
  readonly headers: Readonly<Record<string, string>>
  readonly body: Buffer
}

export function escapeHeader(value: string): string {
  if (!/[\r\n:\\]/.test(value)) return value
  return value.replace(/[\r\n:\\]/g, (c) => (c === '\r' ? '\\r' : c === '\n' ? '\\n' : c === ':' ? '\\c' : '\\\\'))
}

/** Serializes a server frame as text (bodies are UTF-8 strings; `content-length` counts bytes). */
export function serialize(command: ServerCommand, headers: Record<string, string | number | undefined>, body = ''): string {
  const escape = command !== 'CONNECTED'
  let out = command + '\n'
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue
    const v = String(value)
    out += (escape ? escapeHeader(name) : name) + ':' + (escape ? escapeHeader(v) : v) + '\n'
  }
  if (body.length > 0 || command === 'MESSAGE' || command === 'ERROR') out += 'content-length:' + Buffer.byteLength(body) + '\n'
  return out + '\n' + body + '\u0000'
}
