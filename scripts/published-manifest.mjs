// The package.json that is published: the repository's, without what only a clone uses (its
// scripts, which npm 11 would list to every installer as install scripts to approve, since one
// of them is `prepare`, and the test runner's settings).
//
//   node scripts/published-manifest.mjs --write   rewrites package.json so (the release job runs
//                                                 it in its checkout just before npm publish)
import { readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

/** Fields of package.json that serve only a clone of the repository. */
export const CLONE_ONLY = ['scripts', 'ava']

export function publishedManifest(pkg) {
  const out = { ...pkg }
  for (const k of CLONE_ONLY) delete out[k]
  return out
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  if (!process.argv.includes('--write')) {
    console.log(
      JSON.stringify(publishedManifest(JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'))), null, 2),
    )
  } else {
    const file = path.join(root, 'package.json')
    writeFileSync(file, JSON.stringify(publishedManifest(JSON.parse(readFileSync(file, 'utf8'))), null, 2) + '\n')
    console.log(`package.json: ${CLONE_ONLY.join(' and ')} removed for publishing`)
  }
}
