/**
 * The tracer with OpenTelemetry (config `tracing`): the project's official packages, spans exported
 * in batches over OTLP/HTTP as JSON. This module is the only one that imports them, and
 * server/app.ts loads it with `import()` only when `tracing.enabled` (rule 12): with tracing off no
 * OpenTelemetry SDK module is in the process.
 *
 * Nothing is registered globally (no global tracer provider, context manager or propagator): the
 * current span is kept in an AsyncLocalStorage of this module, spans are started with their parent
 * context given explicitly, and `traceparent` is read and written with the W3C propagator here.
 * So libraries that look for a global tracer (the Redis client's instrumentation) stay silent.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import type { IncomingHttpHeaders } from 'node:http';
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, defaultTextMapGetter, defaultTextMapSetter, trace, type Context, type Span } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor, ParentBasedSampler, TraceIdRatioBasedSampler, TracerProvider } from '@opentelemetry/sdk-trace';
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from '@opentelemetry/semantic-conventions';
import type { Config } from '../config/config.js';
import type { SpanAttributes, SpanHandle, Tracer } from '../util/tracing.js';

const KINDS = { internal: SpanKind.INTERNAL, client: SpanKind.CLIENT } as const;

class Handle implements SpanHandle {
  /** `own`: false for the parent's span lent to work that opened no span of its own (not sampled): writes nothing. */
  constructor(
    private readonly s: Span,
    private readonly own = true,
  ) {}
  get traceId(): string {
    return this.s.spanContext().traceId;
  }
  set(key: string, value: string | number | boolean): void {
    if (this.own) this.s.setAttribute(key, value);
  }
  rename(name: string): void {
    if (this.own) this.s.updateName(name);
  }
  failed(message: string): void {
    if (this.own) this.s.setStatus({ code: SpanStatusCode.ERROR, message: message.slice(0, 500) });
  }
}

/** A failure as a span says it: its class and message (an OciError's or UpstreamError's own words), no stack. */
function markFailed(span: Span, err: unknown): void {
  const message = err instanceof Error ? err.message : String(err);
  span.setStatus({ code: SpanStatusCode.ERROR, message: message.slice(0, 500) });
  span.setAttribute('error.type', (err as { code?: unknown } | null)?.code !== undefined ? String((err as { code: unknown }).code) : err instanceof Error ? err.name : 'Error');
}

export class OtelTracer implements Tracer {
  private readonly current = new AsyncLocalStorage<Context>();
  private readonly propagator = new W3CTraceContextPropagator();
  private readonly provider: TracerProvider;
  private readonly tracer: ReturnType<TracerProvider['getTracer']>;

  constructor(tracing: Config['tracing'], version: string) {
    const exporter = new OTLPTraceExporter({ url: tracing.endpoint, headers: { ...tracing.headers } });
    // SDK 3 (@opentelemetry/sdk-trace): span processors take their exporter in an options object.
    this.provider = new TracerProvider({
      resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: tracing.serviceName, [ATTR_SERVICE_VERSION]: version }),
      sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(tracing.sampleRatio) }),
      spanProcessors: [new BatchSpanProcessor({ exporter, scheduledDelayMillis: tracing.exportInterval })],
    });
    this.tracer = this.provider.getTracer('stevedore', version);
  }

  span<T>(name: string, attributes: SpanAttributes, fn: (span: SpanHandle) => Promise<T>, kind: 'internal' | 'client' = 'internal'): Promise<T> {
    const parent = this.current.getStore() ?? ROOT_CONTEXT;
    const parentSpan = trace.getSpan(parent);
    // A trace not sampled: its children would not be recorded either. The work runs in the parent's
    // context (an upstream request still carries its traceparent, sampled flag off), with no span.
    if (parentSpan && !parentSpan.isRecording()) return fn(new Handle(parentSpan, false));
    const span = this.tracer.startSpan(name, { kind: KINDS[kind], attributes }, parent);
    return this.run(trace.setSpan(parent, span), span, fn);
  }

  serve<T>(name: string, headers: IncomingHttpHeaders, attributes: SpanAttributes, fn: (span: SpanHandle) => Promise<T>): Promise<T> {
    const parent = this.propagator.extract(ROOT_CONTEXT, headers, defaultTextMapGetter);
    const span = this.tracer.startSpan(name, { kind: SpanKind.SERVER, attributes }, parent);
    return this.run(trace.setSpan(parent, span), span, fn);
  }

  inject(headers: Record<string, string>): void {
    const ctx = this.current.getStore();
    if (ctx) this.propagator.inject(ctx, headers, defaultTextMapSetter);
  }

  async shutdown(): Promise<void> {
    await this.provider.shutdown();
  }

  private run<T>(ctx: Context, span: Span, fn: (span: SpanHandle) => Promise<T>): Promise<T> {
    return this.current.run(ctx, async () => {
      try {
        return await fn(new Handle(span));
      } catch (err) {
        markFailed(span, err);
        throw err;
      } finally {
        span.end();
      }
    });
  }
}
