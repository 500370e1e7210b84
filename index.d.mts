// Types of the ES module entry point (index.mjs): the same API as the CommonJS build.
import * as sharmipc from './dist/index.js'

export * from './dist/index.js'
export default sharmipc
