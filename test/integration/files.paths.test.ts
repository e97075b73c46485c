import { createHash } from 'node:crypto'
import { existsSync, readdirSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Cluster } from '../../src/cluster.js'
import { isChorusError } from '../../src/errors.js'
import { member } from '../helpers/cluster.js'
import { testDatabase, type TestDatabase } from '../helpers/db.js'

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex')

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p
  } catch (err) {
    if (isChorusError(err)) return err.code
    throw err
  }
  return 'resolved'
}

/** Every entry below `dir`, with its size, so a test can prove nothing outside the root changed. */
function snapshot(dir: string, skip: string): string[] {
  const out: string[] = []
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name)
      if (p === skip) continue
      out.push(`${p}:${e.isDirectory() ? 'dir' : e.isSymbolicLink() ? 'link' : 'file'}`)
      if (e.isDirectory()) walk(p)
    }
  }
  walk(dir)
  return out.sort()
}

/** A stream of `chunks` chunks of `size` bytes, that records whether it was destroyed. */
function chunkStream(chunks: number, size: number): Readable & { produced: number } {
  let i = 0
  const s = new Readable({
    read() {
      if (i++ < chunks) this.push(Buffer.alloc(size, 0x61))
      else this.push(null)
    },
  }) as Readable & { produced: number }
  return s
}

describe('shared files: paths, limits and the API', () => {
  let db: TestDatabase
  let base: string
  let root: string
  let canary: string
  let files: Cluster['files']
  let a: Cluster
  let b: Cluster

  beforeAll(async () => {
    db = await testDatabase()
    base = await mkdtemp(join(tmpdir(), 'chorus-files-paths-'))
    root = join(base, 'root')
    canary = join(base, 'canary.txt')
    await writeFile(canary, 'canary')
    await mkdir(join(root), { recursive: true })
    // Hostile links inside the root: to /, to the root's parent, to a file outside.
    await symlink('/', join(root, 'link'))
    await symlink('..', join(root, 'up'))
    await symlink(canary, join(root, 'canary-link'))
    a = await member(db.url, 'paths-a', { files: { root, maxFileBytes: 1024 * 1024 } })
    b = await member(db.url, 'paths-b', { files: { root, maxFileBytes: 1024 * 1024 } })
    files = a.files
  })

  afterAll(async () => {
    await Promise.all([a?.close(), b?.close()])
    await db?.drop()
    await rm(base, { recursive: true, force: true })
  })

  describe('hostile paths', () => {
    const inCanary = () => canary.slice(1) // the canary's absolute path, as a relative one
    const table: [string, () => string, string][] = [
      ['a parent segment', () => '../x', 'CHORUS_ERR_FILES_PATH_INVALID'],
      ['an absolute path', () => '/etc/passwd', 'CHORUS_ERR_FILES_PATH_INVALID'],
      ['a path climbing out through a directory', () => 'a/../../x', 'CHORUS_ERR_FILES_PATH_INVALID'],
      ['a NUL byte', () => 'a\u0000b', 'CHORUS_ERR_FILES_PATH_INVALID'],
      ['backslashes', () => '..\\..\\x', 'CHORUS_ERR_FILES_PATH_INVALID'],
      ['a backslash inside a segment', () => 'a\\..\\..\\x', 'CHORUS_ERR_FILES_PATH_INVALID'],
      ['a drive letter', () => 'C:/x', 'CHORUS_ERR_FILES_PATH_INVALID'],
      ['a control character', () => 'a\nb', 'CHORUS_ERR_FILES_PATH_INVALID'],
      ['the reserved temporary prefix', () => 'a/.chorus-tmp.1.abcdefabcdef.x', 'CHORUS_ERR_FILES_PATH_INVALID'],
      ['a path through a symlink to /', () => `link/${inCanary()}`, 'CHORUS_ERR_FILES_SYMLINK'],
      ['a symlink to / itself', () => 'link', 'CHORUS_ERR_FILES_SYMLINK'],
      ['a path through a symlink to the parent', () => 'up/canary.txt', 'CHORUS_ERR_FILES_SYMLINK'],
      ['a symlink to a file outside', () => 'canary-link', 'CHORUS_ERR_FILES_SYMLINK'],
    ]

    for (const [what, path, expected] of table) {
      it(`refuses ${what} for every operation, touching nothing outside the root`, async () => {
        const before = snapshot(base, root)
        const p = path()
        const ops: [string, () => Promise<unknown>][] = [
          ['write', () => files.write(p, 'pwned')],
          ['write stream', () => files.write(p, Readable.from([Buffer.from('pwned')]))],
          ['read', () => files.read(p)],
          ['createReadStream', () => files.createReadStream(p)],
          ['list', () => files.list(p)],
          ['move from', () => files.move(p, 'moved-here')],
          ['move to', () => files.write('source.txt', 'x').then(() => files.move('source.txt', `${p}/y`))],
          ['remove below', () => files.remove(`${p}/x`, { recursive: true })],
        ]
        ops.push(['stat', () => files.stat(p)])
        for (const [op, run] of ops) {
          const code = await codeOf(run())
          expect([expected, 'CHORUS_ERR_FILES_PATH_INVALID', 'CHORUS_ERR_FILES_SYMLINK'], `${op}(${JSON.stringify(p)}) gave ${code}`).toContain(code)
          if (op !== 'move to' && op !== 'remove below') expect(code, `${op}(${JSON.stringify(p)})`).toBe(expected)
        }
        expect(await readFile(canary, 'utf8')).toBe('canary')
        expect(snapshot(base, root)).toEqual(before)
      })
    }

    it('refuses a stat of a symlink, and a remove of one deletes the link only', async () => {
      expect(await codeOf(files.stat('link'))).toBe('CHORUS_ERR_FILES_SYMLINK')
      await symlink(canary, join(root, 'doomed-link'))
      expect((await files.remove('doomed-link')).removed).toBe(true)
      expect(existsSync(join(root, 'doomed-link'))).toBe(false)
      expect(await readFile(canary, 'utf8')).toBe('canary')
      expect(existsSync('/etc')).toBe(true)
    })

    it('normalises harmless forms: ./a//b/ is a/b', async () => {
      const r = await files.write('./norm//x/', 'n')
      expect(r.path).toBe('norm/x')
      expect(await files.read('norm/./x')).toEqual(Buffer.from('n'))
    })

    it('keeps areas inside themselves', async () => {
      const uploads = files.area('uploads')
      expect(await codeOf(uploads.read('../canary.txt'))).toBe('CHORUS_ERR_FILES_PATH_INVALID')
      expect(() => files.area('../x')).toThrow(/invalid/)
      expect(() => files.area('')).toThrow(/area/)
    })
  })

  describe('limits: oversized uploads leave nothing behind', () => {
    it('refuses a buffer over maxBytes before taking a lock or creating a directory', async () => {
      const code = await codeOf(files.write('big1/deep/file', Buffer.alloc(2 * 1024 * 1024)))
      expect(code).toBe('CHORUS_ERR_FILES_TOO_LARGE')
      expect(existsSync(join(root, 'big1'))).toBe(false)
      expect(await codeOf(files.write('small', 'abcdef', { maxBytes: 5 }))).toBe('CHORUS_ERR_FILES_TOO_LARGE')
      expect(existsSync(join(root, 'small'))).toBe(false)
    })

    it('cuts a stream off at the limit: typed error, source destroyed, no temporary file, no new directories', async () => {
      const stream = chunkStream(100, 64 * 1024) // 6.4 MB offered, limit 1 MiB
      const err = await files.write('big2/deep/file', stream).catch((e: unknown) => e)
      expect(isChorusError(err, 'CHORUS_ERR_FILES_TOO_LARGE')).toBe(true)
      expect((err as { status: number }).status).toBe(413)
      expect(stream.destroyed).toBe(true)
      expect(existsSync(join(root, 'big2'))).toBe(false)
      expect(await b.files.stat('big2/deep/file')).toBeNull()
    })

    it('keeps the old content when an oversized stream tries to replace it', async () => {
      await files.write('keep/file', 'old content')
      const code = await codeOf(files.write('keep/file', chunkStream(10, 1024), { maxBytes: 4096 }))
      expect(code).toBe('CHORUS_ERR_FILES_TOO_LARGE')
      expect(await b.files.read('keep/file', {})).toEqual(Buffer.from('old content'))
      expect(await readdir(join(root, 'keep'))).toEqual(['file'])
    })

    it('refuses to read a file larger than maxBytes', async () => {
      await files.write('readlimit', Buffer.alloc(10_000))
      expect(await codeOf(files.read('readlimit', { maxBytes: 9_999 }))).toBe('CHORUS_ERR_FILES_TOO_LARGE')
    })

    it('turns a failing source stream into a typed error with nothing written', async () => {
      async function* failing() {
        yield Buffer.from('partial')
        throw new Error('client went away')
      }
      const err = await files.write('failed/upload', failing()).catch((e: unknown) => e)
      expect(isChorusError(err, 'CHORUS_ERR_FILES_IO')).toBe(true)
      expect((err as Error).message).toContain('client went away')
      expect(existsSync(join(root, 'failed'))).toBe(false)
    })

    it('refuses data that is not bytes, text or a stream of them, with nothing written', async () => {
      expect(await codeOf(files.write('bad/number', 42 as never))).toBe('CHORUS_ERR_FILES_DATA_INVALID')
      const objects = Readable.from([{ not: 'bytes' }])
      const err = await files.write('bad/objects', objects).catch((e: unknown) => e)
      expect(isChorusError(err, 'CHORUS_ERR_FILES_DATA_INVALID')).toBe(true)
      expect((err as Error).message).toContain('object mode')
      expect(existsSync(join(root, 'bad'))).toBe(false)
    })

    it('refuses a bad or unknown option by name before touching anything', async () => {
      for (const [option, call] of [
        ['maxBytes', () => files.write('opt/a', 'x', { maxBytes: -1 })],
        ['overwrite', () => files.write('opt/a', 'x', { overwrite: 'yes' as never })],
        ['maxbytes', () => files.write('opt/a', 'x', { maxbytes: 1 } as never)],
        ['limit', () => files.list('', { limit: 1.5 })],
        ['recursive', () => files.remove('opt', { recursive: 1 as never })],
        ['options', () => files.read('opt/a', null as never)],
      ] as const) {
        const err = await call().catch((e: unknown) => e)
        expect(isChorusError(err, 'CHORUS_ERR_OPTIONS_INVALID'), option).toBe(true)
        expect((err as { details: { option: string } }).details.option).toBe(option)
      }
      expect(existsSync(join(root, 'opt'))).toBe(false)
    })
  })

  describe('the API', () => {
    it('writes atomically and reports size and sha256; another instance reads it whole', async () => {
      const data = Buffer.from('hello from a')
      const r = await files.write('docs/hello.txt', data)
      expect(r).toMatchObject({ path: 'docs/hello.txt', size: data.length, sha256: sha(data) })
      expect(typeof r.token).toBe('bigint')
      expect(await b.files.read('docs/hello.txt')).toEqual(data)
      const s = await b.files.stat('docs/hello.txt')
      expect(s).toMatchObject({ path: 'docs/hello.txt', type: 'file', size: data.length })
      expect(await b.files.stat('docs/missing')).toBeNull()
      expect(await b.files.stat('nowhere/missing')).toBeNull()
      const chunks: Buffer[] = []
      for await (const c of await b.files.createReadStream('docs/hello.txt', { start: 6 })) chunks.push(c as Buffer)
      expect(Buffer.concat(chunks).toString()).toBe('from a')
    })

    it('lists a directory sorted, without temporary files', async () => {
      await files.write('listing/b', 'b')
      await files.write('listing/a', 'a')
      await files.write('listing/sub/c', 'c')
      await writeFile(join(root, 'listing', '.chorus-tmp.1.abcdefabcdef.ghost'), 'half')
      const names = (await files.list('listing')).map((e) => `${e.name}:${e.type}`)
      expect(names).toEqual(['a:file', 'b:file', 'sub:directory'])
      expect((await files.list('listing/sub'))[0]).toMatchObject({ name: 'c', path: 'listing/sub/c', type: 'file', size: 1 })
      expect(await codeOf(files.list('listing/a'))).toBe('CHORUS_ERR_FILES_WRONG_TYPE')
      expect(await codeOf(files.list('no/such/dir'))).toBe('CHORUS_ERR_FILES_NOT_FOUND')
      expect(await codeOf(files.list('listing', { limit: 2 }))).toBe('CHORUS_ERR_FILES_TOO_MANY_ENTRIES')
    })

    it('serves areas as sub-roots', async () => {
      const uploads = files.area('uploads')
      await uploads.write('u1/f.bin', 'x')
      expect(await readFile(join(root, 'uploads', 'u1', 'f.bin'), 'utf8')).toBe('x')
      expect((await uploads.list('u1')).map((e) => e.path)).toEqual(['u1/f.bin'])
      expect(uploads.directory).toBe(join(root, 'uploads'))
      expect(await b.files.area('uploads').read('u1/f.bin')).toEqual(Buffer.from('x'))
    })

    it('refuses to overwrite when told not to, and to put a file where a directory is', async () => {
      await files.write('ow/f', '1')
      expect(await codeOf(files.write('ow/f', '2', { overwrite: false }))).toBe('CHORUS_ERR_FILES_EXISTS')
      expect(await codeOf(files.write('ow', '2'))).toBe('CHORUS_ERR_FILES_WRONG_TYPE')
      expect(await codeOf(files.write('ow/f/under', '2'))).toBe('CHORUS_ERR_FILES_WRONG_TYPE')
      expect(await files.read('ow/f')).toEqual(Buffer.from('1'))
      expect(await codeOf(files.read('ow'))).toBe('CHORUS_ERR_FILES_WRONG_TYPE')
      expect(await codeOf(files.read('ow/nothing'))).toBe('CHORUS_ERR_FILES_NOT_FOUND')
    })

    it('removes files, empty directories, and trees only when recursive', async () => {
      await files.write('rm/x/y/z', 'z')
      expect(await codeOf(files.remove('rm/x'))).toBe('CHORUS_ERR_FILES_NOT_EMPTY')
      expect((await files.remove('rm/x/y/z')).removed).toBe(true)
      expect((await files.remove('rm/x/y')).removed).toBe(true)
      await files.write('rm/x/y/z', 'z')
      const r = await b.files.remove('rm', { recursive: true })
      expect(r.removed).toBe(true)
      expect(existsSync(join(root, 'rm'))).toBe(false)
      expect(readdirSync(root).filter((n) => n.startsWith('.chorus-'))).toEqual([])
      expect((await files.remove('rm', { recursive: true })).removed).toBe(false)
      expect(await codeOf(files.remove(''))).toBe('CHORUS_ERR_FILES_PATH_INVALID')
    })

    it('moves files and directories, creating the destination directories', async () => {
      await files.write('mv/src/f', 'moved')
      await files.move('mv/src', 'mv/dst/inner')
      expect(await b.files.read('mv/dst/inner/f')).toEqual(Buffer.from('moved'))
      expect(await files.stat('mv/src')).toBeNull()
      await files.write('mv/other', 'o')
      expect(await codeOf(files.move('mv/other', 'mv/dst/inner/f'))).toBe('CHORUS_ERR_FILES_EXISTS')
      await files.move('mv/other', 'mv/dst/inner/f', { overwrite: true })
      expect(await files.read('mv/dst/inner/f')).toEqual(Buffer.from('o'))
      expect(await codeOf(files.move('mv/dst', 'mv/dst/inner/deeper'))).toBe('CHORUS_ERR_FILES_PATH_INVALID')
      expect(await codeOf(files.move('mv/none', 'mv/any'))).toBe('CHORUS_ERR_FILES_NOT_FOUND')
    })

    it('never deadlocks moves crossing each other on two instances', async () => {
      await files.write('cross/p/f', 'p')
      await files.write('cross/q/f', 'q')
      // Moves back and forth between p and q in both directions on both instances, while an
      // exclusive lock on a parent comes and goes (a waiter between two movers): every call finishes.
      const loop = async (c: Cluster, from: string, to: string) => {
        let done = 0
        for (let i = 0; i < 40; i++) {
          const [x, y] = i % 2 === 0 ? [from, to] : [to, from]
          const code = await codeOf(c.files.move(`cross/${x}/f`, `cross/${y}/f`, { overwrite: true }))
          expect(['resolved', 'CHORUS_ERR_FILES_NOT_FOUND']).toContain(code)
          done++
        }
        return done
      }
      const remover = async () => {
        for (let i = 0; i < 15; i++) {
          const parent = await b.files.lock(i % 2 === 0 ? 'cross/p' : 'cross', 'exclusive')
          await new Promise((r) => setTimeout(r, 2))
          await parent.release()
        }
      }
      const counts = await Promise.all([loop(a, 'p', 'q'), loop(b, 'q', 'p'), loop(a, 'q', 'p'), remover()])
      expect(counts.slice(0, 3)).toEqual([40, 40, 40])
    })

    it('runs writes and removals under a lock the caller holds, and refuses one that does not cover the path', async () => {
      const lock = await files.lock('grouped', 'exclusive')
      try {
        await files.write('grouped/one', '1', { lock })
        await files.write('grouped/two', '2', { lock })
        await files.remove('grouped/one', { lock })
      } finally {
        await lock.release()
      }
      expect((await files.list('grouped')).map((e) => e.name)).toEqual(['two'])
      const shared = await files.lock('grouped', 'shared')
      expect(await codeOf(files.write('grouped/three', '3', { lock: shared }))).toBe('CHORUS_ERR_FILES_LOCK_INVALID')
      await shared.release()
      const other = await files.lock('elsewhere')
      expect(await codeOf(files.write('grouped/three', '3', { lock: other }))).toBe('CHORUS_ERR_FILES_LOCK_INVALID')
      await other.release()
      expect(await codeOf(files.write('elsewhere/x', '3', { lock: other }))).toBe('CHORUS_ERR_FILES_LOCK_INVALID')
      const plain = await a.locks.acquire('files/grouped')
      expect(await codeOf(files.write('grouped/three', '3', { lock: plain }))).toBe('CHORUS_ERR_FILES_LOCK_INVALID')
      await plain.release()
    })

    it('keeps a writer out of a directory while a shared lock on it is held', async () => {
      const held = await b.files.lock('guarded', 'shared')
      let wrote = false
      const write = files.write('guarded/f', 'x').then(() => (wrote = true))
      await new Promise((r) => setTimeout(r, 300))
      expect(wrote).toBe(false)
      expect(await b.files.stat('guarded/f')).toBeNull()
      await held.release()
      await write
      expect(wrote).toBe(true)
      expect((await stat(join(root, 'guarded', 'f'))).size).toBe(1)
    })
  })
})
