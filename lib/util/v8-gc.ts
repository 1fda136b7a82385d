/**
 * V8's gc() (its `gc` extension, which takes the kind of collection as options), obtained without
 * exposing it to every module as the global `gc`: the flag is set for a moment, a new context made
 * (it gets `gc`), and the flag cleared again. Used by server/idle-memory.ts (memory-reducing full
 * collections) and util/buffer-churn.ts (young-generation collections).
 */
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';

export type GcFunction = (options: { type: 'major' | 'minor'; execution: 'sync'; flavor?: 'regular' | 'last-resort' }) => void;

let gcFunction: GcFunction | null = null;

export function v8Gc(): GcFunction {
  if (gcFunction) return gcFunction;
  v8.setFlagsFromString('--expose-gc');
  try {
    gcFunction = runInNewContext('gc') as GcFunction;
  } finally {
    v8.setFlagsFromString('--no-expose-gc');
  }
  return gcFunction;
}
