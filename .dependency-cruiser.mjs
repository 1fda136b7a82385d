/**
 * The layers of lib/ (docs/ARCHITECTURE.md, section 2) as rules: `npm run check` fails on an import
 * cycle, or on an import from a folder into one above it in LAYERS (higher = knows more). A folder
 * may import itself and anything below it; `server/` and `cli/` sit on top.
 * Two more rules keep the OpenTelemetry SDK in one module, loaded with import() only.
 */
const LAYERS = ['oci', 'config', 'util', 'storage', 'metadata', 'cluster', 'upstream', 'cache', 'registry', 'verify', 'events', 'server', 'cli'];

const layerRules = LAYERS.slice(0, -1).map((layer, i) => ({
  name: `layer-${layer}`,
  comment: `lib/${layer}/ may import only ${LAYERS.slice(0, i).join(', ') || 'nothing else in lib/'} (docs/ARCHITECTURE.md, section 2)`,
  severity: 'error',
  from: { path: `^lib/${layer}/` },
  to: { path: `^lib/(${LAYERS.slice(i + 1).join('|')})/` },
}));

export default {
  forbidden: [
    {
      name: 'no-circular',
      comment: 'an import cycle: two modules that cannot be understood (or loaded) one without the other',
      severity: 'error',
      from: { path: '^lib/' },
      to: { circular: true },
    },
    ...layerRules,
    {
      name: 'opentelemetry-in-one-module',
      comment: 'the OpenTelemetry SDK is imported by lib/server/otel-tracer.ts alone; every other module opens spans through lib/util/tracing.ts (docs/ARCHITECTURE.md, section 3.10)',
      severity: 'error',
      from: { path: '^lib/', pathNot: '^lib/server/otel-tracer\\.ts$' },
      to: { path: '@opentelemetry/' },
    },
    {
      name: 'opentelemetry-loaded-lazily',
      comment: 'lib/server/otel-tracer.ts is loaded with import() only, when tracing is on: with it off, no OpenTelemetry SDK module is in the process (rule 12)',
      severity: 'error',
      from: { path: '^lib/' },
      to: { path: '^lib/server/otel-tracer\\.ts$', dependencyTypesNot: ['dynamic-import'] },
    },
    {
      name: 'lib-not-tests',
      comment: 'lib/ never imports test/ or bench/',
      severity: 'error',
      from: { path: '^lib/' },
      to: { path: '^(test|bench)/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsConfig: { fileName: 'tsconfig.json' },
    tsPreCompilationDeps: true,
    enhancedResolveOptions: { extensions: ['.ts', '.js'] },
  },
};
