// ES module entry point of sharmipc/compat. Like index.mjs, it re-exports the CommonJS build, so
// `import` and `require` share one module (the same classes, one set of open channels).
import compat from './dist/compat.js'

export const { SharmIpc, SharmNpc, PipeRole } = compat

export default compat
