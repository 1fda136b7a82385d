/**
 * `node:http`, taken without an ES module import. Importing it as a module makes Node build the
 * module's named exports, which reads every property of it, and on Node 24 three of them
 * (`WebSocket`, `MessageEvent`, `CloseEvent`) are getters that load Node's own bundled copy of
 * undici: about 6 MiB of heap and 6 MiB of the runtime's pages in every process, used for nothing
 * here (measured: `import { STATUS_CODES } from 'node:http'` vs this, issue 28's fresh RSS).
 * `process.getBuiltinModule` returns the module object itself and reads nothing.
 *
 * Code here imports http from this module; `import type` from 'node:http' is fine (erased).
 */
const http = process.getBuiltinModule('node:http');

export default http;
