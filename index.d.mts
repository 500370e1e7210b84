// Types of the ES module entry point (index.mjs): the same API as the CommonJS build.
import * as sharmipc from './index.js'

export * from './index.js'
export default sharmipc
