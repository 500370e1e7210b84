// Types of the ES module entry point of sharmipc/compat (compat.mjs): the same API as the CommonJS build.
import * as compat from './dist/compat.js'

export * from './dist/compat.js'
export default compat
