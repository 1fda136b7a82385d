/**
 * `Promise.all(items.map(fn))` with at most `limit` calls running at once: for work that opens a
 * file or asks an upstream per item, where a manifest of thousands of references must not open
 * thousands of files (EMFILE) or send thousands of requests together.
 *
 * On the first failure no further item is started; the calls already running are waited for (so
 * nothing keeps working behind the caller's back and no rejection goes unobserved), then that
 * first error is thrown.
 */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array<R>(items.length);
  let next = 0;
  let failed = false;
  let firstError: unknown;
  const worker = async (): Promise<void> => {
    while (!failed && next < items.length) {
      const i = next++;
      try {
        results[i] = await fn(items[i]!, i);
      } catch (err) {
        if (!failed) firstError = err;
        failed = true;
      }
    }
  };
  const workers = Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, () => worker());
  await Promise.all(workers);
  if (failed) throw firstError;
  return results;
}
