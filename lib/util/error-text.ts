/** An error as one line for a person (doctor's findings): its code when the message lacks it, and its cause. */
export function errText(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    const cause = err.cause instanceof Error ? `: ${err.cause.message}` : '';
    return code && !err.message.includes(code) ? `${code} (${err.message}${cause})` : `${err.message}${cause}`;
  }
  return String(err);
}
