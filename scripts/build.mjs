// Builds the package: TypeScript to dist/, then the SQL migrations beside the compiled code.
import { execFileSync } from 'node:child_process'
import { cpSync, mkdirSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const require = createRequire(import.meta.url)
const tsc = require.resolve('typescript/bin/tsc')

rmSync(join(root, 'dist'), { recursive: true, force: true })
execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.json')], { stdio: 'inherit', cwd: root })
mkdirSync(join(root, 'dist/db/migrations'), { recursive: true })
cpSync(join(root, 'src/db/migrations'), join(root, 'dist/db/migrations'), { recursive: true })
