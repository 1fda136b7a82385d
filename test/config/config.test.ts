import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { problems } from '../fixtures/config-problems.js';
import { parse as parseYaml } from 'yaml';
import { ConfigError, loadConfig, parseConfig, type Config } from '../../lib/config/config.js';

const EXAMPLE = fileURLToPath(new URL('../../config/stevedore.yaml', import.meta.url));

/** The built-in upstream timeouts. */
const TIMEOUTS = { connect: 10_000, firstByte: 60_000, idle: 120_000, stall: 30_000, minProgress: 16 * 1024, request: 120_000 };

const ONE_UPSTREAM = { defaultUpstream: null, upstreams: { 'r.example.com': { url: 'https://r.example.com' } } };
const url = (u: string): Config => parseConfig({ defaultUpstream: null, upstreams: { 'r.example.com': { url: u } } });

// ---------------------------------------------------------------- defaults and the example file

t.test('config/stevedore.yaml documents exactly the embedded defaults', async (t) => {
  t.same(loadConfig({ file: EXAMPLE, env: {} }), parseConfig({}));
});

/** Key paths of every setting in an object of settings (not into lists and the upstream map). */
function keyPaths(o: object, prefix = ''): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(o)) {
    const p = `${prefix}${k}`;
    out.push(p);
    if (typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Map) && k !== 'groups') out.push(...keyPaths(v as object, `${p}.`));
  }
  return out;
}

t.test('config/stevedore.yaml writes out every setting, each with its default', async (t) => {
  const example = parseYaml(readFileSync(EXAMPLE, 'utf8')) as object;
  const written = new Set(keyPaths(example));
  // listen is written as HOST:PORT; upstreams are a list of examples; auth.rules are derived from
  // registry.hosted when absent (written out as a comment: a `rules` key would replace them).
  const missing = keyPaths(parseConfig({})).filter(
    (p) => !written.has(p) && !p.startsWith('upstreams.') && !p.startsWith('listen.') && !p.startsWith('auth.rules'),
  );
  t.same(missing, [], 'no setting of the embedded defaults is left out of the example file');
});

t.test('the example file, with its commented credentials enabled, loads them from the environment', async (t) => {
  const text = readFileSync(EXAMPLE, 'utf8').replace(/# (username|password): /g, '$1: ');
  t.not(text, readFileSync(EXAMPLE, 'utf8'), 'the example has commented credentials to enable');
  const dir = t.testdir({ 'stevedore.yaml': text });
  const config = loadConfig({ file: path.join(dir, 'stevedore.yaml'), env: { DOCKERHUB_USER: 'me', DOCKERHUB_TOKEN: 'dckr_pat_x' } });
  t.same(config.upstreams.get('docker.io')!.credentials, { username: 'me', password: 'dckr_pat_x' });
});

t.test("the example file's commented storage.s3 block, enabled, is the S3 backend with every default", async (t) => {
  const original = readFileSync(EXAMPLE, 'utf8');
  const block = /^ {2}# {3}s3:\n(?: {2}# {5}.*\n)+/m.exec(original)?.[0];
  t.ok(block, 'the example has a commented s3: block under storage');
  const text = original.replace(block ?? '', (block ?? '').replace(/^ {2}# {3}/gm, '  ')).replace(/^ {2}s3: null\n/m, '').replace(/^ {2}backend: filesystem$/m, '  backend: s3');
  const dir = t.testdir({ 'stevedore.yaml': text });
  const config = loadConfig({ file: path.join(dir, 'stevedore.yaml'), env: { AWS_ACCESS_KEY_ID: 'AKIAEXAMPLE', AWS_SECRET_ACCESS_KEY: 'secret' } });
  t.equal(config.storage.backend, 's3');
  const defaults = parseConfig({ storage: { backend: 's3', s3: { bucket: config.storage.s3!.bucket } } }).storage.s3;
  t.same(config.storage.s3, { ...defaults, accessKeyId: 'AKIAEXAMPLE', secretAccessKey: 'secret' }, 'the written values are the defaults, with the keys from the environment');
});

t.test('the defaults are the documented values', async (t) => {
  const c = parseConfig({});
  t.same(c.listen, { host: '0.0.0.0', port: 5000 });
  t.same(c.server, {
    headersTimeout: 20_000,
    keepAliveTimeout: 65_000,
    idleTimeout: 300_000,
    requestBodyTimeout: 30_000,
    requestBodyMinBytes: 16 * 1024,
    maxConnections: null,
    maxConnectionsPerAddress: 256,
    shutdownGrace: 10_000,
    workers: 'auto',
    idleMemoryReturn: 30_000,
  });
  t.equal(c.storage.path, './data');
  t.equal(c.storage.maxSize, null);
  t.same(c.metadata, { redis: null, username: null, password: null, passwordFile: null, tls: null });
  t.same(c.cluster, {
    leaseTTL: 10_000,
    pollInterval: 100,
    recencyFlush: 5_000,
    evictionInterval: 10_000,
    replicaId: null,
    advertise: null,
    token: null,
    allowedNetworks: ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '127.0.0.0/8', '::1/128', 'fc00::/7'],
  });
  t.same(c.log, { level: 'info', format: 'auto' });
  t.equal(c.cache.tagTTL, 300_000);
  t.equal(c.cache.manifestMaxSize, 4 * 1024 * 1024);
  t.equal(c.cache.finishAbandonedDownloads, true);
  t.equal(c.cache.downloadResumes, 5);
  t.equal(c.cache.manifestMaxReferences, 10_000);
  t.equal(c.cache.blobMaxSize, 32 * 1024 ** 3);
  t.equal(c.cache.tagsListMaxTags, 100_000);
  t.equal(c.cache.tagsListMaxBytes, 16 * 1024 * 1024);
  t.same(c.timeouts, TIMEOUTS);
  t.equal(c.registry.pushUpstreamChecks, 64);
  t.equal(c.defaultUpstream, 'docker.io');
});

t.test('the default upstreams are the seven public registries, by their client-facing names', async (t) => {
  const c = parseConfig({});
  t.same(Object.fromEntries([...c.upstreams].map(([name, u]) => [name, u.url])), {
    'docker.io': 'https://registry-1.docker.io',
    'ghcr.io': 'https://ghcr.io',
    'quay.io': 'https://quay.io',
    'registry.k8s.io': 'https://registry.k8s.io',
    'gcr.io': 'https://gcr.io',
    'mcr.microsoft.com': 'https://mcr.microsoft.com',
    'public.ecr.aws': 'https://public.ecr.aws',
  });
});

t.test('each default upstream inherits the global tagTTL and timeouts and has no credentials', async (t) => {
  for (const [name, u] of parseConfig({}).upstreams) {
    t.equal(u.name, name);
    t.equal(u.credentials, null, `${name} credentials`);
    t.equal(u.tagTTL, 300_000, `${name} tagTTL`);
    t.same(u.timeouts, TIMEOUTS, `${name} timeouts`);
  }
});

t.test('null (an empty YAML document) gives the defaults', async (t) => {
  t.same(parseConfig(null), parseConfig({}));
});

t.test('parseConfig without options ignores the process environment', async (t) => {
  const before = process.env.STEVEDORE_LISTEN;
  process.env.STEVEDORE_LISTEN = ':6000';
  t.teardown(() => {
    if (before === undefined) delete process.env.STEVEDORE_LISTEN;
    else process.env.STEVEDORE_LISTEN = before;
  });
  t.equal(parseConfig({}).listen.port, 5000);
});

// ---------------------------------------------------------------- values

const listens: Array<[unknown, { host: string; port: number }]> = [
  [':8080', { host: '0.0.0.0', port: 8080 }],
  ['8080', { host: '0.0.0.0', port: 8080 }],
  [8080, { host: '0.0.0.0', port: 8080 }],
  ['127.0.0.1:8080', { host: '127.0.0.1', port: 8080 }],
  ['localhost:5000', { host: 'localhost', port: 5000 }],
  ['[::1]:5000', { host: '::1', port: 5000 }],
  ['[::]:443', { host: '::', port: 443 }],
  [':0', { host: '0.0.0.0', port: 0 }],
  [':65535', { host: '0.0.0.0', port: 65535 }],
];
for (const [input, expected] of listens) {
  t.test(`listen ${JSON.stringify(input)} is ${expected.host} port ${expected.port}`, async (t) => {
    t.same(parseConfig({ listen: input }).listen, expected);
  });
}

for (const input of ['x', ':65536', 'localhost:', '::1:5000', '[::1]', 'host:80:80', ':123456', ':-1', '']) {
  t.test(`listen ${JSON.stringify(input)} is refused under the key listen`, async (t) => {
    t.match(problems(() => parseConfig({ listen: input })), [/^listen: /]);
  });
}

t.test('durations and sizes are written as human strings', async (t) => {
  const c = parseConfig({ cache: { tagTTL: '1h', manifestMaxSize: '8MiB' }, timeouts: { connect: '250ms', firstByte: '2m', idle: '1d' } });
  t.equal(c.cache.tagTTL, 3_600_000);
  t.equal(c.cache.manifestMaxSize, 8 * 1024 * 1024);
  t.same(c.timeouts, { ...TIMEOUTS, connect: 250, firstByte: 120_000, idle: 86_400_000 });
});

t.test('a numeric duration is seconds and a numeric size is bytes', async (t) => {
  const c = parseConfig({ cache: { tagTTL: 30, manifestMaxSize: 1000 } });
  t.equal(c.cache.tagTTL, 30_000);
  t.equal(c.cache.manifestMaxSize, 1000);
});

t.test('a bad duration is reported with its key path and a hint', async (t) => {
  t.match(problems(() => parseConfig({ cache: { tagTTL: 'soon' } })), [/^cache\.tagTTL: not a duration: "soon" \(use e\.g\. 30s/]);
});

t.test('a bad size is reported with its key path and a hint', async (t) => {
  t.match(problems(() => parseConfig({ cache: { manifestMaxSize: 'big' } })), [/^cache\.manifestMaxSize: not a size: "big" \(use e\.g\. 4MiB/]);
});

t.test('a boolean where a duration belongs is refused', async (t) => {
  t.match(problems(() => parseConfig({ timeouts: { idle: true } })), [/^timeouts\.idle: /]);
});

t.test('storage.maxSize is a size, and null means unbounded', async (t) => {
  t.equal(parseConfig({ storage: { maxSize: '50GiB' } }).storage.maxSize, 50 * 1024 ** 3);
  t.equal(parseConfig({ storage: { maxSize: null } }).storage.maxSize, null);
});

t.test('a bad storage.maxSize is reported under its key', async (t) => {
  t.match(problems(() => parseConfig({ storage: { maxSize: 'lots' } })), [/^storage\.maxSize: not a size/]);
});

t.test('storage.s3.readConcurrency is auto unless set to 1-64; anything else is refused, naming the key', async (t) => {
  const s3 = (extra: Record<string, unknown>): unknown => ({ storage: { backend: 's3', s3: { bucket: 'stevedore-blobs', ...extra } } });
  t.equal(parseConfig(s3({})).storage.s3?.readConcurrency, 'auto');
  t.equal(parseConfig(s3({ readConcurrency: 1 })).storage.s3?.readConcurrency, 1);
  t.equal(parseConfig(s3({ readConcurrency: 64 })).storage.s3?.readConcurrency, 64);
  for (const bad of [0, 65, 2.5, 'many', null]) t.match(problems(() => parseConfig(s3({ readConcurrency: bad }))), [/^storage\.s3\.readConcurrency: /], String(bad));
});

t.test('storage.s3.pooledReads is on unless set false; anything but a boolean is refused, naming the key', async (t) => {
  const s3 = (extra: Record<string, unknown>): unknown => ({ storage: { backend: 's3', s3: { bucket: 'stevedore-blobs', ...extra } } });
  t.equal(parseConfig(s3({})).storage.s3?.pooledReads, true);
  t.equal(parseConfig(s3({ pooledReads: false })).storage.s3?.pooledReads, false);
  t.match(problems(() => parseConfig(s3({ pooledReads: 'yes' }))), [/^storage\.s3\.pooledReads: /]);
});

t.test('a presigned redirect lives an hour at most: a longer storage.s3.redirectTTL is refused, naming the key', async (t) => {
  const s3 = (redirectTTL: string): unknown => ({ storage: { backend: 's3', s3: { bucket: 'stevedore-blobs', redirect: true, redirectTTL } } });
  t.match(problems(() => parseConfig(s3('7d'))), [/^storage\.s3\.redirectTTL: between 10s and 1h/]);
  t.match(problems(() => parseConfig(s3('61m'))), [/^storage\.s3\.redirectTTL: /]);
  t.equal(parseConfig(s3('1h')).storage.s3?.redirectTTL, 3_600_000, 'an hour is allowed');
});

t.test('cache.finishAbandonedDownloads can be switched off', async (t) => {
  t.equal(parseConfig({ cache: { finishAbandonedDownloads: false } }).cache.finishAbandonedDownloads, false);
});

t.test('cache.downloadResumes accepts whole numbers from 0 to 100', async (t) => {
  t.equal(parseConfig({ cache: { downloadResumes: 0 } }).cache.downloadResumes, 0);
  t.equal(parseConfig({ cache: { downloadResumes: 100 } }).cache.downloadResumes, 100);
});

for (const bad of [-1, 101, 1.5, '3']) {
  t.test(`cache.downloadResumes ${JSON.stringify(bad)} is refused`, async (t) => {
    t.match(problems(() => parseConfig({ cache: { downloadResumes: bad } })), [/^cache\.downloadResumes: /]);
  });
}

t.test('a redis URL is kept as written', async (t) => {
  t.equal(parseConfig({ metadata: { redis: 'redis://127.0.0.1:6379/0' } }).metadata.redis, 'redis://127.0.0.1:6379/0');
});

t.test('a redis value that is not a URL is refused', async (t) => {
  t.match(problems(() => parseConfig({ metadata: { redis: 'localhost' } })), [/^metadata\.redis: /]);
});

t.test('rediss:// with a user, password file and CA is read as written', async (t) => {
  const c = parseConfig({ metadata: { redis: 'rediss://r.example:6380/2', username: 'stevedore', passwordFile: '/run/pw', tls: { ca: '/run/ca.crt' } } });
  t.same(c.metadata, { redis: 'rediss://r.example:6380/2', username: 'stevedore', password: null, passwordFile: '/run/pw', tls: { ca: '/run/ca.crt', cert: null, key: null, serverName: null } });
});

t.test('metadata.password from ${VAR}', async (t) => {
  t.equal(parseConfig({ metadata: { redis: 'redis://r:6379', password: '${REDIS_PASSWORD}' } }, { env: { REDIS_PASSWORD: 'pw-from-env' } }).metadata.password, 'pw-from-env');
});

const redisProblems: Array<[string, Record<string, unknown>, RegExp]> = [
  ['a scheme other than redis or rediss', { redis: 'http://r:6379' }, /^metadata\.redis: must be redis:\/\/ or rediss:\/\/ \(TLS\), got http:\/\//],
  ['a path that is not a database number', { redis: 'redis://r:6379/x' }, /^metadata\.redis: the path is a database number/],
  ['credentials without a Redis', { password: 'pw' }, /^metadata\.password: needs metadata\.redis/],
  ['password and passwordFile', { redis: 'redis://r', password: 'pw', passwordFile: '/f' }, /^metadata\.passwordFile: give metadata\.password or metadata\.passwordFile, not both/],
  ['a password in the URL and in a key', { redis: 'redis://:pw@r', password: 'pw2' }, /^metadata\.password: metadata\.redis already carries a password/],
  ['a user in the URL and in a key', { redis: 'redis://u:pw@r', username: 'v' }, /^metadata\.username: metadata\.redis already carries a user name/],
  ['TLS settings on redis://', { redis: 'redis://r', tls: { ca: '/ca' } }, /^metadata\.tls: TLS settings need a rediss:\/\/ URL/],
  ['a client certificate without its key', { redis: 'rediss://r', tls: { cert: '/c' } }, /^metadata\.tls: cert and key go together/],
];
for (const [what, metadata, re] of redisProblems) {
  t.test(`metadata: ${what} is refused, naming the key`, async (t) => {
    t.match(problems(() => parseConfig({ metadata })), [re]);
  });
}

t.test('a refused Redis URL is not quoted (it may carry a password)', async (t) => {
  const p = problems(() => parseConfig({ metadata: { redis: 'ftp://u:hunter2pw@r' } }));
  t.notOk(p.join('\n').includes('hunter2pw'));
});

t.test('every log level pino knows is accepted', async (t) => {
  for (const level of ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const) {
    t.equal(parseConfig({ log: { level } }).log.level, level);
  }
});

t.test('an unknown log level is refused under log.level', async (t) => {
  t.match(problems(() => parseConfig({ log: { level: 'verbose' } })), [/^log\.level: /]);
});

t.test('an empty storage path is refused', async (t) => {
  t.match(problems(() => parseConfig({ storage: { path: '' } })), [/^storage\.path: /]);
});

t.test('a misspelt top-level key is refused and named', async (t) => {
  t.match(problems(() => parseConfig({ upstream: {} })), [/^\(top level\): .*"upstream"/]);
});

t.test('a misspelt nested key is refused under its section', async (t) => {
  t.match(problems(() => parseConfig({ cache: { tagTtl: '5m' } })), [/^cache: .*"tagTtl"/]);
});

t.test('a document that is a string or an array is refused at the top level', async (t) => {
  t.match(problems(() => parseConfig('listen: 5000')), [/^\(top level\): /]);
  t.match(problems(() => parseConfig([])), [/^\(top level\): /]);
});

// ---------------------------------------------------------------- every error at once

t.test('every schema error is reported at once, each with its key path', async (t) => {
  const p = problems(() =>
    parseConfig({
      listen: 'nowhere',
      log: { level: 'loud' },
      cache: { tagTTL: 'soon', manifestMaxSize: 'big' },
      upstreams: { 'r.example.com': { url: 'ftp://r.example.com' } },
      defaultUpstream: null,
    }),
  );
  t.equal(p.length, 5, p.join('\n'));
  t.match(p, [/^listen: /, /^log\.level: /, /^cache\.tagTTL: /, /^cache\.manifestMaxSize: /, /^upstreams\.r\.example\.com\.url: /]);
});

t.test('the ConfigError message names the source and lists every problem', async (t) => {
  try {
    parseConfig({ listen: 'x', log: { level: 'y' } }, { source: '/etc/stevedore.yaml' });
    t.fail('did not throw');
  } catch (err) {
    t.ok(err instanceof ConfigError);
    t.equal((err as Error).name, 'ConfigError');
    t.match((err as Error).message, /^invalid configuration \(\/etc\/stevedore\.yaml\):\n {2}- listen: .*\n {2}- log\.level: /);
  }
});

t.test('a schema error and an unknown defaultUpstream are reported together', async (t) => {
  const p = problems(() => parseConfig({ listen: 'nowhere', defaultUpstream: 'nowhere.example.com' }));
  t.match(p, [/^listen: /], 'the schema error');
  t.ok(p.some((x) => x.startsWith('defaultUpstream: ')), `the defaultUpstream error too; got:\n${p.join('\n')}`);
});

t.test('a bad URL and a username without password on the same upstream are reported together', async (t) => {
  const p = problems(() => parseConfig({ defaultUpstream: null, upstreams: { 'r.example.com': { url: 'https://r.example.com/v2', username: 'me' } } }));
  t.ok(p.some((x) => x.startsWith('upstreams.r.example.com.url: ')), 'the url error');
  t.ok(p.some((x) => /username and password/.test(x)), `the credentials error too; got:\n${p.join('\n')}`);
});

// ---------------------------------------------------------------- ${VAR} expansion

t.test('${VAR} in a string value is replaced by the environment variable', async (t) => {
  const c = parseConfig({ storage: { path: '${DATA}/stevedore' } }, { env: { DATA: '/var/lib' } });
  t.equal(c.storage.path, '/var/lib/stevedore');
});

t.test('several ${VAR}s in one value are all replaced', async (t) => {
  const c = parseConfig({ metadata: { redis: 'redis://${H}:${P}/0' } }, { env: { H: 'cache', P: '6380' } });
  t.equal(c.metadata.redis, 'redis://cache:6380/0');
});

t.test('${VAR} works inside upstream credentials', async (t) => {
  const c = parseConfig(
    { upstreams: { 'docker.io': { url: 'https://registry-1.docker.io', username: '${U}', password: '${P}' } } },
    { env: { U: 'me', P: 's3cret' } },
  );
  t.same(c.upstreams.get('docker.io')!.credentials, { username: 'me', password: 's3cret' });
});

t.test('an unset ${VAR} is an error naming the variable and the key', async (t) => {
  const p = problems(() => parseConfig({ storage: { path: '/data/${NOPE}' } }, { env: {} }));
  t.match(p, [/^storage\.path: environment variable NOPE is not set$/]);
});

t.test('an unset ${VAR} is reported together with the schema errors', async (t) => {
  const p = problems(() => parseConfig({ listen: 'x', storage: { path: '/d/${NOPE}' } }, { env: {} }));
  t.ok(p.some((x) => x === 'storage.path: environment variable NOPE is not set'));
  t.ok(p.some((x) => x.startsWith('listen: ')));
});

t.test('a variable set to the empty string counts as set', async (t) => {
  t.equal(parseConfig({ storage: { path: './x${EMPTY}' } }, { env: { EMPTY: '' } }).storage.path, './x');
});

t.test('expansion is not recursive: a value containing ${...} is used literally', async (t) => {
  t.equal(parseConfig({ storage: { path: '${A}' } }, { env: { A: '${B}', B: 'no' } }).storage.path, '${B}');
});

t.test('$VAR without braces is left alone', async (t) => {
  t.equal(parseConfig({ storage: { path: './$HOME' } }, { env: { HOME: '/root' } }).storage.path, './$HOME');
});

t.test('keys are not expanded, only values', async (t) => {
  t.match(problems(() => parseConfig({ '${K}': 1 }, { env: { K: 'listen' } })), [/"\$\{K\}"/]);
});

// ---------------------------------------------------------------- STEVEDORE_* overrides

t.test('STEVEDORE_LISTEN overrides listen', async (t) => {
  t.same(parseConfig({ listen: ':1' }, { env: { STEVEDORE_LISTEN: '127.0.0.1:7000' } }).listen, { host: '127.0.0.1', port: 7000 });
});

t.test('STEVEDORE_STORAGE_PATH overrides storage.path', async (t) => {
  t.equal(parseConfig({ storage: { path: '/a' } }, { env: { STEVEDORE_STORAGE_PATH: '/b' } }).storage.path, '/b');
});

t.test('STEVEDORE_LOG_LEVEL overrides log.level', async (t) => {
  t.equal(parseConfig({ log: { level: 'info' } }, { env: { STEVEDORE_LOG_LEVEL: 'debug' } }).log.level, 'debug');
});

t.test('cluster mode on the S3 backend runs one process per replica: server.workers above 1 is refused, naming why', async (t) => {
  const s3Cluster = { storage: { backend: 's3', s3: { bucket: 'stevedore-blobs' } }, metadata: { redis: 'redis://127.0.0.1:6379' } };
  t.throws(() => parseConfig({ ...s3Cluster, server: { workers: 2 } }), /server\.workers: cluster mode on the S3 backend .* runs one process per replica/);
  t.throws(() => parseConfig(s3Cluster, { env: { STEVEDORE_WORKERS: '4' } }), /server\.workers: cluster mode on the S3 backend/, 'from the environment too');
  t.equal(parseConfig({ ...s3Cluster, server: { workers: 'auto' } }).server.workers, 'auto', 'auto is 1 there (cli/main.ts)');
  t.equal(parseConfig({ storage: s3Cluster.storage, server: { workers: 2 } }).server.workers, 2, 'without Redis the workers of one host share a bucket (each streams what it downloads from a loopback port)');
  t.equal(parseConfig({ metadata: s3Cluster.metadata, server: { workers: 2 } }).server.workers, 2, 'cluster mode on a shared directory: workers are replicas on it');
});

t.test('node mode runs one process per node instance: server.workers above 1 is refused', async (t) => {
  const node = { metadata: { redis: 'redis://127.0.0.1:6379' }, node: { central: { url: 'http://127.0.0.1:5000' }, peers: { advertise: 'http://127.0.0.1:5001', token: 'a-token-of-32-characters-or-more-0123' } } };
  t.throws(() => parseConfig({ ...node, server: { workers: 2 } }), /server\.workers: node mode/);
});

t.test('STEVEDORE_WORKERS overrides server.workers: a number or auto', async (t) => {
  t.equal(parseConfig({ server: { workers: 4 } }, { env: { STEVEDORE_WORKERS: '1' } }).server.workers, 1);
  t.equal(parseConfig({ server: { workers: 4 } }, { env: { STEVEDORE_WORKERS: 'auto' } }).server.workers, 'auto');
  t.throws(() => parseConfig({}, { env: { STEVEDORE_WORKERS: 'many' } }), /server\.workers/);
});

t.test('STEVEDORE_REDIS_URL overrides metadata.redis', async (t) => {
  t.equal(parseConfig({}, { env: { STEVEDORE_REDIS_URL: 'redis://r:6379' } }).metadata.redis, 'redis://r:6379');
});

t.test('an invalid override is reported under the key it overrides', async (t) => {
  t.match(problems(() => parseConfig({}, { env: { STEVEDORE_LOG_LEVEL: 'chatty' } })), [/^log\.level: /]);
  t.match(problems(() => parseConfig({}, { env: { STEVEDORE_LISTEN: 'nope' } })), [/^listen: /]);
});

t.test('an empty override is ignored', async (t) => {
  t.equal(parseConfig({ listen: ':1234' }, { env: { STEVEDORE_LISTEN: '' } }).listen.port, 1234);
});

t.test('an override does not expand ${VAR}', async (t) => {
  t.equal(parseConfig({}, { env: { STEVEDORE_STORAGE_PATH: '${X}', X: 'y' } }).storage.path, '${X}');
});

t.test('an override does not touch a document that is not an object', async (t) => {
  t.match(problems(() => parseConfig('text', { env: { STEVEDORE_LISTEN: ':1' } })), [/^\(top level\): /]);
});

// ---------------------------------------------------------------- upstreams

t.test('listing upstreams replaces the whole default list', async (t) => {
  t.same([...parseConfig(ONE_UPSTREAM).upstreams.keys()], ['r.example.com']);
});

t.test('an upstream URL is reduced to its origin', async (t) => {
  t.equal(url('https://r.example.com/').upstreams.get('r.example.com')!.url, 'https://r.example.com');
  t.equal(url('https://R.Example.COM').upstreams.get('r.example.com')!.url, 'https://r.example.com');
  t.equal(url('https://r.example.com:443').upstreams.get('r.example.com')!.url, 'https://r.example.com');
});

t.test('an upstream URL keeps a non-default port', async (t) => {
  t.equal(url('https://r.example.com:8443').upstreams.get('r.example.com')!.url, 'https://r.example.com:8443');
});

t.test('a plain http upstream is accepted', async (t) => {
  t.equal(url('http://127.0.0.1:5001').upstreams.get('r.example.com')!.url, 'http://127.0.0.1:5001');
});

const badUrls: Array<[string, string, RegExp]> = [
  ['a path', 'https://r.example.com/v2', /origin only/],
  ['a path without a trailing slash', 'https://r.example.com/mirror/', /origin only/],
  ['a query', 'https://r.example.com/?x=1', /origin only/],
  ['a fragment', 'https://r.example.com/#x', /origin only/],
  ['a user and password', 'https://me:secret@r.example.com', /credentials go in username\/password/],
  ['a user only', 'https://me@r.example.com', /origin only/],
  ['an ftp scheme', 'ftp://r.example.com', /must be http:\/\/ or https:\/\/, got ftp:/],
  ['a file scheme', 'file:///etc/passwd', /must be http:\/\/ or https:\/\//],
  ['no scheme', 'r.example.com', /not a URL/],
  ['nothing', '', /not a URL/],
];
for (const [what, input, message] of badUrls) {
  t.test(`an upstream URL with ${what} is refused under its key`, async (t) => {
    const p = problems(() => url(input));
    t.equal(p.length, 1, p.join('\n'));
    t.match(p[0], /^upstreams\.r\.example\.com\.url: /);
    t.match(p[0], message);
  });
}

t.test('a refused URL with credentials does not echo the password', async (t) => {
  t.notMatch(problems(() => url('https://me:hunter2@r.example.com')).join('\n'), /hunter2/);
});

t.test('an upstream without a url is refused', async (t) => {
  t.match(problems(() => parseConfig({ defaultUpstream: null, upstreams: { 'r.example.com': {} } })), [/^upstreams\.r\.example\.com\.url: /]);
});

t.test('an unknown key inside an upstream is refused', async (t) => {
  t.match(
    problems(() => parseConfig({ defaultUpstream: null, upstreams: { 'r.example.com': { url: 'https://r.example.com', token: 'x' } } })),
    [/^upstreams\.r\.example\.com: .*"token"/],
  );
});

for (const name of ['Docker.IO', 'under_score.io', '-a.io', 'a..b', 'a.io/path', 'https://a.io', '']) {
  t.test(`the upstream name ${JSON.stringify(name)} is refused under its key`, async (t) => {
    const p = problems(() => parseConfig({ defaultUpstream: null, upstreams: { [name]: { url: 'https://a.io' } } }));
    t.match(p, [new RegExp(`^upstreams\\.${name.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: `)]);
  });
}

t.test('an upstream name may carry a port or be a single label', async (t) => {
  const c = parseConfig({
    defaultUpstream: null,
    upstreams: { 'localhost:5000': { url: 'http://localhost:5000' }, registry: { url: 'http://registry' } },
  });
  t.same([...c.upstreams.keys()], ['localhost:5000', 'registry']);
});

t.test('username and password together become credentials', async (t) => {
  const c = parseConfig({ ...ONE_UPSTREAM, upstreams: { 'r.example.com': { url: 'https://r.example.com', username: 'u', password: 'p' } } });
  t.same(c.upstreams.get('r.example.com')!.credentials, { username: 'u', password: 'p' });
});

t.test('a username without a password is refused at the upstream', async (t) => {
  t.match(
    problems(() => parseConfig({ defaultUpstream: null, upstreams: { 'r.example.com': { url: 'https://r.example.com', username: 'u' } } })),
    [/^upstreams\.r\.example\.com: username and password go together$/],
  );
});

t.test('a password without a username is refused at the upstream', async (t) => {
  t.match(
    problems(() => parseConfig({ defaultUpstream: null, upstreams: { 'r.example.com': { url: 'https://r.example.com', password: 'p' } } })),
    [/^upstreams\.r\.example\.com: username and password go together$/],
  );
});

t.test('an empty username is refused', async (t) => {
  t.match(
    problems(() => parseConfig({ defaultUpstream: null, upstreams: { 'r.example.com': { url: 'https://r.example.com', username: '', password: 'p' } } })),
    [/^upstreams\.r\.example\.com\.username: /],
  );
});

t.test('a defaultUpstream that is not among the upstreams is refused, listing them', async (t) => {
  t.match(problems(() => parseConfig({ ...ONE_UPSTREAM, defaultUpstream: 'docker.io' })), [
    /^defaultUpstream: docker\.io is not one of upstreams \(r\.example\.com\)$/,
  ]);
});

t.test('the default defaultUpstream is refused when the upstreams leave out docker.io', async (t) => {
  t.match(problems(() => parseConfig({ upstreams: { 'ghcr.io': { url: 'https://ghcr.io' } } })), [/^defaultUpstream: docker\.io /]);
});

t.test('no upstreams at all with the default defaultUpstream says "none"', async (t) => {
  t.match(problems(() => parseConfig({ upstreams: {} })), [/\(none\)$/]);
});

t.test('defaultUpstream null is accepted, even with no upstreams', async (t) => {
  const c = parseConfig({ upstreams: {}, defaultUpstream: null });
  t.equal(c.defaultUpstream, null);
  t.equal(c.upstreams.size, 0);
});

t.test('defaultUpstream may name any configured upstream', async (t) => {
  t.equal(parseConfig({ defaultUpstream: 'ghcr.io' }).defaultUpstream, 'ghcr.io');
});

t.test('a defaultUpstream that is not a host name is refused by the schema', async (t) => {
  t.match(problems(() => parseConfig({ defaultUpstream: 'Docker Hub' })), [/^defaultUpstream: an upstream name is a registry host name/]);
});

t.test('library defaults to true for docker.io only', async (t) => {
  const c = parseConfig({});
  for (const [name, u] of c.upstreams) t.equal(u.library, name === 'docker.io', name);
});

t.test('library can be turned off for docker.io', async (t) => {
  const c = parseConfig({ upstreams: { 'docker.io': { url: 'https://registry-1.docker.io', library: false } } });
  t.equal(c.upstreams.get('docker.io')!.library, false);
});

t.test('library can be turned on for another upstream (a Docker Hub mirror)', async (t) => {
  const c = parseConfig({ defaultUpstream: 'mirror.gcr.io', upstreams: { 'mirror.gcr.io': { url: 'https://mirror.gcr.io', library: true } } });
  t.equal(c.upstreams.get('mirror.gcr.io')!.library, true);
});

t.test('library must be a boolean', async (t) => {
  t.match(problems(() => parseConfig({ ...ONE_UPSTREAM, upstreams: { 'r.example.com': { url: 'https://r.example.com', library: 'yes' } } })), [
    /^upstreams\.r\.example\.com\.library: /,
  ]);
});

t.test('an upstream tagTTL overrides cache.tagTTL for that upstream only', async (t) => {
  const c = parseConfig({
    cache: { tagTTL: '10m' },
    upstreams: { 'docker.io': { url: 'https://registry-1.docker.io', tagTTL: '1h' }, 'ghcr.io': { url: 'https://ghcr.io' } },
  });
  t.equal(c.upstreams.get('docker.io')!.tagTTL, 3_600_000);
  t.equal(c.upstreams.get('ghcr.io')!.tagTTL, 600_000);
  t.equal(c.cache.tagTTL, 600_000);
});

t.test('global timeouts apply to every upstream', async (t) => {
  const c = parseConfig({ timeouts: { connect: '1s' } });
  for (const [name, u] of c.upstreams) t.same(u.timeouts, { ...TIMEOUTS, connect: 1000 }, name);
});

const TIMEOUTS_DOC = {
  timeouts: { connect: '2s', firstByte: '30s' },
  upstreams: {
    'docker.io': { url: 'https://registry-1.docker.io', timeouts: { idle: '10m', firstByte: '90s' } },
    'ghcr.io': { url: 'https://ghcr.io' },
  },
};

t.test('a per-upstream timeout overrides the global one for that upstream', async (t) => {
  const u = parseConfig(TIMEOUTS_DOC).upstreams.get('docker.io')!;
  t.equal(u.timeouts.idle, 600_000);
  t.equal(u.timeouts.firstByte, 90_000);
});

t.test('timeouts a per-upstream block leaves out keep the global values, not the built-in defaults', async (t) => {
  t.equal(parseConfig(TIMEOUTS_DOC).upstreams.get('docker.io')!.timeouts.connect, 2000);
});

t.test('per-upstream timeouts change neither the other upstreams nor the global timeouts', async (t) => {
  const c = parseConfig(TIMEOUTS_DOC);
  t.same(c.upstreams.get('ghcr.io')!.timeouts, { ...TIMEOUTS, connect: 2000, firstByte: 30_000 });
  t.same(c.timeouts, { ...TIMEOUTS, connect: 2000, firstByte: 30_000 });
});

t.test('a bad per-upstream timeout is reported with its full key path', async (t) => {
  t.match(
    problems(() => parseConfig({ ...ONE_UPSTREAM, upstreams: { 'r.example.com': { url: 'https://r.example.com', timeouts: { idle: 'never' } } } })),
    [/^upstreams\.r\.example\.com\.timeouts\.idle: not a duration/],
  );
});

t.test('an unknown per-upstream timeout key is refused', async (t) => {
  t.match(
    problems(() => parseConfig({ ...ONE_UPSTREAM, upstreams: { 'r.example.com': { url: 'https://r.example.com', timeouts: { read: '1s' } } } })),
    [/^upstreams\.r\.example\.com\.timeouts: .*"read"/],
  );
});

// ---------------------------------------------------------------- what upstreams and pushes may cost

t.test('cache.blobMaxSize and cache.tagsListMaxBytes are sizes', async (t) => {
  const c = parseConfig({ cache: { blobMaxSize: '1GiB', tagsListMaxBytes: '2MiB' } });
  t.equal(c.cache.blobMaxSize, 1024 ** 3);
  t.equal(c.cache.tagsListMaxBytes, 2 * 1024 * 1024);
});

t.test('a bad cache.blobMaxSize or cache.tagsListMaxBytes is reported under its key', async (t) => {
  t.match(problems(() => parseConfig({ cache: { blobMaxSize: 'huge', tagsListMaxBytes: '100' } })), [/^cache\.blobMaxSize: not a size/, /^cache\.tagsListMaxBytes: at least 1KiB/]);
});

t.test('cache.manifestMaxReferences and cache.tagsListMaxTags are whole numbers of at least 1', async (t) => {
  const c = parseConfig({ cache: { manifestMaxReferences: 500, tagsListMaxTags: 20_000 } });
  t.equal(c.cache.manifestMaxReferences, 500);
  t.equal(c.cache.tagsListMaxTags, 20_000);
  for (const bad of [0, 1.5, '10', -1]) {
    t.match(problems(() => parseConfig({ cache: { manifestMaxReferences: bad } })), [/^cache\.manifestMaxReferences: /], `manifestMaxReferences ${JSON.stringify(bad)}`);
    t.match(problems(() => parseConfig({ cache: { tagsListMaxTags: bad } })), [/^cache\.tagsListMaxTags: /], `tagsListMaxTags ${JSON.stringify(bad)}`);
  }
});

t.test('by default an upstream body is stalled after 30 s without 16 KiB of progress, well before the idle timeout', async (t) => {
  const c = parseConfig({});
  t.ok(c.timeouts.stall <= 30_000, 'a stall is noticed within 30 s');
  t.ok(c.timeouts.stall < c.timeouts.idle, 'sooner than the idle timeout');
  t.equal(c.timeouts.minProgress, 16 * 1024);
});

t.test('timeouts.stall, minProgress and request are set globally and per upstream', async (t) => {
  const c = parseConfig({
    timeouts: { stall: '10s', minProgress: '1KiB', request: '5m' },
    upstreams: { 'docker.io': { url: 'https://registry-1.docker.io', timeouts: { stall: '1m', request: '30s' } }, 'ghcr.io': { url: 'https://ghcr.io' } },
  });
  t.same(c.upstreams.get('docker.io')!.timeouts, { ...TIMEOUTS, stall: 60_000, minProgress: 1024, request: 30_000 });
  t.same(c.upstreams.get('ghcr.io')!.timeouts, { ...TIMEOUTS, stall: 10_000, minProgress: 1024, request: 300_000 });
});

t.test('timeouts.stall and timeouts.request shorter than 1s are refused under their keys', async (t) => {
  t.match(problems(() => parseConfig({ timeouts: { stall: '500ms', request: '10ms' } })), [/^timeouts\.stall: at least 1s/, /^timeouts\.request: at least 1s/]);
  t.match(
    problems(() => parseConfig({ ...ONE_UPSTREAM, upstreams: { 'r.example.com': { url: 'https://r.example.com', timeouts: { stall: '0s' } } } })),
    [/^upstreams\.r\.example\.com\.timeouts\.stall: at least 1s/],
  );
});

t.test('registry.pushUpstreamChecks accepts whole numbers from 0 to 10000', async (t) => {
  t.equal(parseConfig({ registry: { pushUpstreamChecks: 0 } }).registry.pushUpstreamChecks, 0);
  t.equal(parseConfig({ registry: { pushUpstreamChecks: 10_000 } }).registry.pushUpstreamChecks, 10_000);
  for (const bad of [-1, 2.5, 10_001, 'many']) {
    t.match(problems(() => parseConfig({ registry: { pushUpstreamChecks: bad } })), [/^registry\.pushUpstreamChecks: /], JSON.stringify(bad));
  }
});

t.test('redirects are followed for blobs only, except on registry.k8s.io, whose whole API redirects', async (t) => {
  const c = parseConfig({});
  for (const [name, u] of c.upstreams) t.equal(u.redirects, name === 'registry.k8s.io' ? 'all' : 'blobs', name);
});

t.test('an upstream may set redirects to blobs or all, and nothing else', async (t) => {
  const c = parseConfig({
    upstreams: { 'docker.io': { url: 'https://registry-1.docker.io', redirects: 'all' }, 'registry.k8s.io': { url: 'https://registry.k8s.io', redirects: 'blobs' } },
  });
  t.equal(c.upstreams.get('docker.io')!.redirects, 'all');
  t.equal(c.upstreams.get('registry.k8s.io')!.redirects, 'blobs');
  t.match(
    problems(() => parseConfig({ ...ONE_UPSTREAM, upstreams: { 'r.example.com': { url: 'https://r.example.com', redirects: 'none' } } })),
    [/^upstreams\.r\.example\.com\.redirects: /],
  );
});

// ---------------------------------------------------------------- frozen result

t.test('the config and its nested objects are frozen', async (t) => {
  const c = parseConfig({});
  for (const o of [c, c.listen, c.storage, c.metadata, c.log, c.cache, c.timeouts, c.upstreams.get('docker.io')!, c.upstreams.get('docker.io')!.timeouts]) {
    t.ok(Object.isFrozen(o));
  }
});

t.test('assigning to a config value throws', async (t) => {
  const c = parseConfig({});
  t.throws(() => {
    (c.listen as { port: number }).port = 1;
  }, TypeError);
  t.throws(() => {
    (c.upstreams.get('docker.io') as { url: string }).url = 'https://evil.example.com';
  }, TypeError);
  t.equal(c.listen.port, 5000);
});

t.test('the upstream map cannot be changed at run time', async (t) => {
  const c = parseConfig({});
  const map = c.upstreams as Map<string, unknown>;
  t.throws(() => map.set('evil.example.com', { url: 'https://evil.example.com' }), 'set throws');
  t.throws(() => map.delete('docker.io'), 'delete throws');
  t.equal(c.upstreams.has('evil.example.com'), false, 'no upstream was added');
  t.equal(c.upstreams.has('docker.io'), true, 'no upstream was removed');
});

t.test('two parses share no mutable state', async (t) => {
  const a = parseConfig({});
  const b = parseConfig({ listen: ':6000' });
  t.equal(a.listen.port, 5000);
  t.equal(b.listen.port, 6000);
  t.not(a.upstreams, b.upstreams);
});

// ---------------------------------------------------------------- loadConfig

t.test('loadConfig with no file and no STEVEDORE_CONFIG gives the embedded defaults', async (t) => {
  t.same(loadConfig({ env: {} }), parseConfig({}));
});

t.test('loadConfig reads the file named by STEVEDORE_CONFIG', async (t) => {
  const dir = t.testdir({ 'c.yaml': 'listen: ":7001"\n' });
  t.equal(loadConfig({ env: { STEVEDORE_CONFIG: path.join(dir, 'c.yaml') } }).listen.port, 7001);
});

t.test('an explicit file wins over STEVEDORE_CONFIG', async (t) => {
  const dir = t.testdir({ 'a.yaml': 'listen: ":7001"\n', 'b.yaml': 'listen: ":7002"\n' });
  t.equal(loadConfig({ file: path.join(dir, 'a.yaml'), env: { STEVEDORE_CONFIG: path.join(dir, 'b.yaml') } }).listen.port, 7001);
});

t.test('loadConfig applies ${VAR} and STEVEDORE_* from its env to the file', async (t) => {
  const dir = t.testdir({ 'c.yaml': 'storage:\n  path: ${ROOT}/cache\nlisten: ":1"\n' });
  const c = loadConfig({ file: path.join(dir, 'c.yaml'), env: { ROOT: '/srv', STEVEDORE_LISTEN: ':7003' } });
  t.equal(c.storage.path, '/srv/cache');
  t.equal(c.listen.port, 7003);
});

t.test('an empty file gives the defaults', async (t) => {
  const dir = t.testdir({ 'empty.yaml': '' });
  t.same(loadConfig({ file: path.join(dir, 'empty.yaml'), env: {} }), parseConfig({}));
});

t.test('a file of comments only gives the defaults', async (t) => {
  const dir = t.testdir({ 'c.yaml': '# nothing here\n' });
  t.same(loadConfig({ file: path.join(dir, 'c.yaml'), env: {} }), parseConfig({}));
});

t.test('a missing file is a ConfigError naming the file and the errno code', async (t) => {
  const file = path.join(t.testdir({}), 'missing.yaml');
  const p = problems(() => loadConfig({ file, env: {} }));
  t.same(p, [`cannot read ${file}: ENOENT`]);
});

t.test('a directory given as the file is a ConfigError', async (t) => {
  const dir = t.testdir({});
  t.match(problems(() => loadConfig({ file: dir, env: {} })), [/^cannot read .*: EISDIR$/]);
});

t.test('invalid YAML is a ConfigError with the parser message', async (t) => {
  const dir = t.testdir({ 'bad.yaml': 'listen: [\nstorage: {\n' });
  const file = path.join(dir, 'bad.yaml');
  try {
    loadConfig({ file, env: {} });
    t.fail('did not throw');
  } catch (err) {
    t.ok(err instanceof ConfigError);
    t.match((err as ConfigError).problems, [/^not valid YAML: /]);
    t.match((err as Error).message, file, 'the message names the file');
  }
});

t.test('a YAML scalar document is a ConfigError at the top level', async (t) => {
  const dir = t.testdir({ 'c.yaml': 'just text\n' });
  t.match(problems(() => loadConfig({ file: path.join(dir, 'c.yaml'), env: {} })), [/^\(top level\): /]);
});

t.test('a schema error in a file names the file in the message', async (t) => {
  const dir = t.testdir({ 'c.yaml': 'log:\n  level: loud\n' });
  const file = path.join(dir, 'c.yaml');
  try {
    loadConfig({ file, env: {} });
    t.fail('did not throw');
  } catch (err) {
    t.match((err as Error).message, `invalid configuration (${file})`);
    t.match((err as ConfigError).problems, [/^log\.level: /]);
  }
});

t.test('YAML listen written as a bare port number is accepted', async (t) => {
  const dir = t.testdir({ 'c.yaml': 'listen: 8080\n' });
  t.same(loadConfig({ file: path.join(dir, 'c.yaml'), env: {} }).listen, { host: '0.0.0.0', port: 8080 });
});

// ---------------------------------------------------------------- tls

t.test('tls is off by default, and given cert and key it reloads every 5s unless told otherwise', async (t) => {
  t.equal(parseConfig({}).tls, null);
  t.same(parseConfig({ tls: { cert: '/tls/tls.crt', key: '/tls/tls.key' } }).tls, {
    cert: '/tls/tls.crt',
    key: '/tls/tls.key',
    reloadInterval: 5_000,
    clientCA: null,
    clientAuth: 'off',
    clientIdentity: 'cn',
  });
  t.equal(parseConfig({ tls: { cert: 'c', key: 'k', reloadInterval: '30s' } }).tls?.reloadInterval, 30_000);
});

t.test('tls without its key, or with a reload interval under a second, is refused naming the key', async (t) => {
  t.match(problems(() => parseConfig({ tls: { cert: '/tls/tls.crt' } })), [/^tls\.key: /]);
  t.match(problems(() => parseConfig({ tls: { cert: 'c', key: 'k', reloadInterval: '100ms' } })), [/^tls\.reloadInterval: between 1s and 1h/]);
  t.match(problems(() => parseConfig({ tls: { cert: 'c', key: 'k', ca: 'x' } })), [/^tls: /]);
});

t.test('tls.clientCA alone asks for client certificates without requiring them, named by their CN', async (t) => {
  t.match(parseConfig({ tls: { cert: 'c', key: 'k', clientCA: '/tls/clients-ca.crt' } }).tls, { clientCA: '/tls/clients-ca.crt', clientAuth: 'optional', clientIdentity: 'cn' });
});

t.test('tls.clientAuth required without tls.clientCA is refused, naming the key and what is missing', async (t) => {
  t.same(problems(() => parseConfig({ tls: { cert: 'c', key: 'k', clientAuth: 'required' } })), [
    'tls.clientAuth: required needs tls.clientCA: the CA bundle (PEM) that client certificates must chain to',
  ]);
});

t.test('tls.clientAuth optional without tls.clientCA is refused too', async (t) => {
  t.match(problems(() => parseConfig({ tls: { cert: 'c', key: 'k', clientAuth: 'optional' } })), [/^tls\.clientAuth: optional needs tls\.clientCA/]);
});

t.test('tls.clientAuth and tls.clientIdentity take only their documented values', async (t) => {
  t.match(problems(() => parseConfig({ tls: { cert: 'c', key: 'k', clientCA: 'ca', clientAuth: 'yes', clientIdentity: 'subject' } })), [/^tls\.clientAuth: /, /^tls\.clientIdentity: /]);
  t.equal(parseConfig({ tls: { cert: 'c', key: 'k', clientCA: 'ca', clientIdentity: 'san-uri' } }).tls?.clientIdentity, 'san-uri');
});

t.test('cluster.allowedNetworks and node.peers.allowedNetworks take CIDR blocks only, naming the key', async (t) => {
  for (const bad of [['10.0.0.1'], ['10.0.0.0/40'], ['not-a-network/8'], []]) {
    t.throws(() => parseConfig({ cluster: { allowedNetworks: bad } }), /cluster\.allowedNetworks/, JSON.stringify(bad));
  }
  t.same(parseConfig({ cluster: { allowedNetworks: ['10.244.0.0/16', 'fd00::/8'] } }).cluster.allowedNetworks, ['10.244.0.0/16', 'fd00::/8']);
});

t.test('tracing is off by default, exporting to a local collector every 5s when turned on', async (t) => {
  t.same(parseConfig({}).tracing, { enabled: false, endpoint: 'http://127.0.0.1:4318/v1/traces', serviceName: 'stevedore', sampleRatio: 1, headers: {}, exportInterval: 5_000 });
  const on = parseConfig({ tracing: { enabled: true, endpoint: 'https://otel.example.com/v1/traces', sampleRatio: 0.1, headers: { 'x-api-key': 'k' }, exportInterval: '1s' } }).tracing;
  t.same(on, { enabled: true, endpoint: 'https://otel.example.com/v1/traces', serviceName: 'stevedore', sampleRatio: 0.1, headers: { 'x-api-key': 'k' }, exportInterval: 1_000 });
});

t.test('a tracing endpoint that is not http(s), a ratio outside 0..1 or a bad header name is refused naming the key', async (t) => {
  t.match(problems(() => parseConfig({ tracing: { endpoint: 'grpc://collector:4317' } })), [/^tracing\.endpoint: must be http:\/\/ or https:\/\//]);
  t.match(problems(() => parseConfig({ tracing: { sampleRatio: 2 } })), [/^tracing\.sampleRatio: /]);
  t.match(problems(() => parseConfig({ tracing: { headers: { 'bad header': 'x' } } })), [/^tracing\.headers/]);
});
