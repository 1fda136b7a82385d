/**
 * Traces (config `tracing`, issue 31): the one interface every layer opens spans through. It
 * imports no OpenTelemetry module: the implementation (lib/server/otel-tracer.ts) is loaded with
 * `import()` by server/app.ts only when `tracing.enabled` (rule 12), and installed here with
 * `setTracer`. With tracing off `activeTracer()` is null and callers make no call at all, so a
 * warm request allocates nothing for traces:
 *
 *   const tracer = activeTracer();
 *   return tracer ? tracer.span('store.read', { ... }, () => work()) : work();
 *
 * The current span follows the async context (AsyncLocalStorage inside the implementation): a span
 * opened in storage/ or upstream/ while a request is handled is a child of that request's span.
 */
import type { IncomingHttpHeaders } from 'node:http';

export type SpanAttributes = Record<string, string | number | boolean>;

/** A span being recorded, as its code sees it. */
export interface SpanHandle {
  /** The trace's id, 32 hex digits (the request id of the access line, for a server span). */
  readonly traceId: string;
  set(key: string, value: string | number | boolean): void;
  /** The span's name, once the route is known (`GET /v2/{name}/manifests/{reference}`). */
  rename(name: string): void;
  /** Marks the span as failed (a server span answered 5xx), with stevedore's own words. */
  failed(message: string): void;
}

export interface Tracer {
  /**
   * Runs `fn` in a span that is a child of the current one (none: a trace of its own). The span ends
   * when `fn`'s promise settles; a rejection marks it as an error (its message, never a stack).
   * `kind` 'client' for an outgoing request (HTTP semantic conventions).
   */
  span<T>(name: string, attributes: SpanAttributes, fn: (span: SpanHandle) => Promise<T>, kind?: 'internal' | 'client'): Promise<T>;
  /**
   * Runs `fn` in a server span for an incoming request, continuing the trace its `traceparent`
   * header names (a chain of stevedores is one trace); ends it when `fn` settles.
   */
  serve<T>(name: string, headers: IncomingHttpHeaders, attributes: SpanAttributes, fn: (span: SpanHandle) => Promise<T>): Promise<T>;
  /** Writes the current span's context (`traceparent`, and `tracestate` when there is one) into outgoing headers. */
  inject(headers: Record<string, string>): void;
  /** Exports what is left and stops exporting. */
  shutdown(): Promise<void>;
}

let current: Tracer | null = null;

/** The tracer, or null when tracing is off (the default). */
export function activeTracer(): Tracer | null {
  return current;
}

/** Installs the tracer (server/app.ts, with tracing on), or removes it (null). */
export function setTracer(tracer: Tracer | null): void {
  current = tracer;
}

/** `fn` in a span when tracing is on; `fn` alone (no allocation beyond the call) when it is off. */
export function traced<T>(name: string, attributes: () => SpanAttributes, fn: (span: SpanHandle | null) => Promise<T>): Promise<T> {
  const tracer = current;
  return tracer ? tracer.span(name, attributes(), fn) : fn(null);
}

/**
 * An outgoing HTTP request in a client span (HTTP semantic conventions) when tracing is on: the
 * span's context is written into `headers` (`traceparent`) before `send` runs, so a stevedore on
 * the other end continues the trace. The span ends with the answer's headers (a body streams on).
 */
export function tracedRequest<R extends { statusCode: number }>(
  tracer: Tracer,
  method: string,
  url: URL,
  attributes: SpanAttributes,
  headers: Record<string, string>,
  send: () => Promise<R>,
): Promise<R> {
  const all: SpanAttributes = {
    'http.request.method': method,
    'server.address': url.hostname,
    'server.port': Number(url.port) || (url.protocol === 'https:' ? 443 : 80),
    'url.full': `${url.origin}${url.pathname}`,
    ...attributes,
  };
  return tracer.span(
    method,
    all,
    async (span) => {
      tracer.inject(headers);
      const res = await send();
      span.set('http.response.status_code', res.statusCode);
      if (res.statusCode >= 400) span.failed(`answered ${res.statusCode}`);
      return res;
    },
    'client',
  );
}
