// The numbers and codes the facade shares with the native side come from the binding, not from a
// second copy: the kinds it sends are the binding's, and every error code the binding can throw
// has its class in the facade's registry.
import { readFileSync } from 'node:fs'
import path from 'node:path'

import test from 'ava'

import { ALL_CODES, NATIVE_ERRORS, fromNative, SharmError, toSharmError } from '../lib/errors'
import { native } from '../lib/internal/binding'

test('the facade maps every error code the binding can throw, and nothing else', (t) => {
  const codes = native.errorCodes()
  t.true(codes.length >= 10, `codes: ${codes.join(', ')}`)
  t.deepEqual(Object.keys(NATIVE_ERRORS).sort(), [...codes].sort())
  for (const code of codes) {
    const thrown = Object.assign(new Error(`text of ${code}`), { code })
    const e = fromNative(thrown) as Error & { code?: string }
    t.is(e.code, code, `${code} keeps its code`)
    t.true(e.message.includes(`text of ${code}`), `${code} keeps its text: ${e.message}`)
    if (code !== 'ERR_SHARM_INVALID') t.true(e instanceof SharmError, `${code} becomes a SharmError`)
  }
})

test('an error the native side throws carries its code as a field, and becomes its class by that code', (t) => {
  const e = t.throws(
    () =>
      new native.NativeChannel(
        'binding-spec',
        { capacity: 1000, maxQueueBytes: 0, maxMessageBytes: 1, spinMicros: 0, mode: 0o600 },
        () => {},
      ),
  )
  t.is((e as Error & { code?: string }).code, 'ERR_SHARM_INVALID')
  t.false(e!.message.startsWith('ERR_SHARM'), `the code is not in the message: ${e!.message}`)
  t.regex(e!.message, /capacity must be a power of two .* got 1000/)
})

test("the record kinds the facade uses are the binding's, one number each, and the native side refuses any other", (t) => {
  const kinds = {
    request: native.KIND_REQUEST,
    response: native.KIND_RESPONSE,
    errorResponse: native.KIND_ERROR_RESPONSE,
    message: native.KIND_MESSAGE,
    stream: native.KIND_STREAM,
    cancel: native.KIND_CANCEL,
  }
  const numbers = Object.values(kinds)
  t.true(
    numbers.every((k) => Number.isInteger(k) && k > 0 && k < 256),
    JSON.stringify(kinds),
  )
  t.is(new Set(numbers).size, numbers.length, `distinct: ${JSON.stringify(kinds)}`)
  const name = `binding-kinds-${process.pid}`
  const ch = new native.NativeChannel(
    name,
    { capacity: 4096, maxQueueBytes: 1 << 20, maxMessageBytes: 1 << 20, spinMicros: 0, mode: 0o600 },
    () => {},
  )
  try {
    for (const k of numbers) t.notThrows(() => ch.send(k, 1, 0, Buffer.from('x')), `kind ${k} is sendable`)
    for (let k = 0; k < 256; k++) {
      if (numbers.includes(k)) continue
      const e = t.throws(() => ch.send(k, 1, 0, Buffer.from('x')))
      t.is((e as Error & { code?: string }).code, 'ERR_SHARM_INVALID')
      t.true(e!.message.includes(`got ${k}`), e!.message)
    }
  } finally {
    ch.close()
  }
})

test('the layout constants of the binding are what its output is', (t) => {
  t.is(native.RECORD_HEADER_BYTES, 16)
  t.is(native.RECORD_ALIGN, 8)
  t.is(native.POLL_LARGE, 0xffffffff)
  t.true(native.POLL_META_HEAD > native.POLL_WORD_QUEUED + 1)
  const words = [
    native.POLL_WORD_EVENTS,
    native.POLL_WORD_MORE,
    native.POLL_WORD_ARENA_END,
    native.POLL_WORD_QUEUED,
    native.POLL_WORD_QUEUED + 1,
  ]
  t.is(new Set(words).size, words.length, 'each head word has one meaning')
})

test("every code an error of the library can carry is in the README's error tables", (t) => {
  const readme = readFileSync(path.join(__dirname, '..', 'README.md'), 'utf8')
  const errors = readme.slice(readme.indexOf('### Errors'), readme.indexOf('### Diagnostics'))
  const documented = new Set([...errors.matchAll(/^\| [^|]+\| `([A-Z_]+)`/gm)].map((m) => m[1]))
  const produced = [
    ...ALL_CODES,
    ...native.errorCodes(),
    'ABORT_ERR',
    'ERR_INVALID_ARG_TYPE',
    'ERR_INVALID_ARG_VALUE',
    'ERR_OUT_OF_RANGE',
  ]
  for (const code of produced) t.true(documented.has(code), `${code} is documented`)
})

test("what an 'error' listener gets is a SharmError; one made of another error carries it as cause", (t) => {
  const invalid = Object.assign(new TypeError('bad'), { code: 'ERR_SHARM_INVALID' })
  const wrapped = toSharmError(invalid)
  t.true(wrapped instanceof SharmError)
  t.is(wrapped.code, 'ERR_SHARM_INVALID')
  t.is(wrapped.cause, invalid)
  const plain = new Error('something else')
  const other = toSharmError(plain)
  t.is(other.code, 'ERR_SHARM_OS')
  t.is(other.cause, plain)
  const own = new SharmError('ERR_SHARM_BUSY', 'busy')
  t.is(toSharmError(own), own, 'a SharmError is passed on as it is')
})
