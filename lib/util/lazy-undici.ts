/**
 * undici, loaded when a connection is first needed rather than at start-up. Loading it costs a
 * fresh process about 14 MiB of heap and 15 MiB of the runtime's pages (measured on Node 24); a
 * process that has not yet spoken to an upstream, a peer or a webhook — or never will: a
 * hosted-only registry, an air-gapped lab — does not pay it (issue 28, fresh RSS).
 *
 * Only types are imported statically here and in the modules that use it.
 */
import type * as Undici from 'undici';

type UndiciModule = typeof Undici;
export type AgentOptions = NonNullable<ConstructorParameters<typeof Undici.Agent>[0]>;

let loading: Promise<UndiciModule> | null = null;

/** The undici module, imported once on first call. */
export function undici(): Promise<UndiciModule> {
  loading ??= import('undici').catch((err: unknown) => {
    loading = null; // tried again on the next call
    throw err;
  });
  return loading;
}

/** The options of undici's `request` (its own type, without the opaque parameter). */
export type RequestOptions = { dispatcher?: Undici.Dispatcher } & Omit<Undici.Dispatcher.RequestOptions<null>, 'origin' | 'path' | 'method'> &
  Partial<Pick<Undici.Dispatcher.RequestOptions, 'method'>>;

/** undici's `request`, loaded on first use. */
export async function request(url: string | URL, options?: RequestOptions): Promise<Undici.Dispatcher.ResponseData> {
  return (await undici()).request(url, options);
}

/**
 * An undici Agent created on first use, with the options it was given. Closing one never used
 * loads nothing; closing one being created closes it once created.
 */
export class LazyAgent {
  private agent: Undici.Agent | null = null;
  private making: Promise<Undici.Agent> | null = null;
  private closed = false;

  constructor(private readonly options: AgentOptions) {}

  /**
   * The agent (created now if it was not yet): synchronous once it exists, for the hot path.
   * After close() or destroy() none is created (a rejection, as undici's own UND_ERR_CLOSED; one
   * that exists rejects requests itself). A failed creation is tried again on the next call.
   */
  get(): Undici.Agent | Promise<Undici.Agent> {
    if (this.agent) return this.agent;
    if (this.closed) return Promise.reject(closedError());
    this.making ??= undici().then(
      ({ Agent }) => {
        this.agent = new Agent(this.options);
        return this.agent;
      },
    ).catch((err: unknown) => {
      this.making = null; // made again on the next request
      throw err;
    });
    return this.making;
  }

  /** Whether the agent was ever created (tests, and nothing to close otherwise). */
  get created(): boolean {
    return this.agent !== null || this.making !== null;
  }

  async close(): Promise<void> {
    this.closed = true;
    await (await this.existing())?.close().catch(() => undefined);
  }

  async destroy(): Promise<void> {
    this.closed = true;
    await (await this.existing())?.destroy().catch(() => undefined);
  }

  private async existing(): Promise<Undici.Agent | null> {
    return this.agent ?? (this.making ? await this.making.catch(() => null) : null);
  }
}

/** What a request after shutdown gets, with the code undici's own closed agent gives. */
function closedError(): Error {
  return Object.assign(new Error('the connections were closed (shutting down)'), { code: 'UND_ERR_CLOSED' });
}
