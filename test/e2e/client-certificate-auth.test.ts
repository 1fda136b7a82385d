// Client certificates against stevedore's own auth (lib/server/auth/client-certificate.ts), over
// real TLS connections from Node: tokens issued to a certificate are bound to it, credentials in
// a request still name it, and a client CA bundle replaced on disk is used for new connections.
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import bcrypt from 'bcryptjs';
import t from 'tap';
import { tlsInit } from '../../lib/cli/tls-init.js';
import { startStevedore } from '../fixtures/stevedore.js';
import { tmpDir, waitFor, type Teardownable } from '../fixtures/util.js';

interface Answer {
  status: number;
  body: string;
}

/** One request on a new connection, trusting `ca`, presenting `client` when given. */
function get(url: string, ca: Buffer, client: { cert: string; key: string } | null, headers: Record<string, string> = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    https
      .get(url, { ca, agent: false, headers, ...(client ? { cert: readFileSync(client.cert), key: readFileSync(client.key) } : {}) }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.once('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
        res.once('error', reject);
      })
      .once('error', reject);
  });
}

async function pki(t: Teardownable, clients: string[]): Promise<{ dir: string; ca: Buffer; caCert: string; cert: string; key: string; client: (n: string) => { cert: string; key: string } }> {
  const dir = await tmpDir(t, 'stevedore-mtls-');
  const r = await tlsInit({ names: ['127.0.0.1'], clients, out: dir, days: 30 });
  return {
    dir,
    ca: readFileSync(r.caCert),
    caCert: r.caCert,
    cert: r.files!.cert,
    key: r.files!.key,
    client: (n) => ({ cert: path.join(dir, `client-${n}.crt`), key: path.join(dir, `client-${n}.key`) }),
  };
}

const AUTH = (htpasswd: string): Record<string, unknown> => ({
  htpasswd,
  anonymousPull: false,
  rules: [
    { repository: 'lab/**', users: ['cn:node-1', 'alice'], actions: ['pull'] },
  ],
});

t.test('a certificate identity with stevedore\'s token flow and password users', async (t) => {
  const certs = await pki(t, ['node-1']);
  const htpasswd = path.join(certs.dir, 'htpasswd');
  writeFileSync(htpasswd, `alice:${bcrypt.hashSync('Al1ce-mtls-pass', 5)}\n`);
  const sd = await startStevedore(t, {
    upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } },
    config: { registry: { hosted: ['lab/**'] }, tls: { cert: certs.cert, key: certs.key, clientCA: certs.caCert, clientAuth: 'optional' }, auth: AUTH(htpasswd) },
  });
  const node1 = certs.client('node-1');

  await t.test('GET /v2/ with a certificate is 200: the client is somebody, no login needed', async (t) => {
    t.equal((await get(`${sd.url}/v2/`, certs.ca, node1)).status, 200);
    t.equal((await get(`${sd.url}/v2/`, certs.ca, null)).status, 401, 'without one, the challenge');
  });

  await t.test('a token issued on a connection presenting node-1\'s certificate names cn:node-1 and is refused on a connection without it', async (t) => {
    const answer = await get(`${sd.url}/token?service=stevedore&scope=repository:lab/app:pull`, certs.ca, node1);
    t.equal(answer.status, 200, 'the token endpoint answers');
    const token = (JSON.parse(answer.body) as { token: string }).token;
    const claims = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString('utf8')) as { sub: string; access: unknown };
    t.equal(claims.sub, 'cn:node-1');
    t.same(claims.access, [{ type: 'repository', name: 'lab/app', actions: ['pull'] }]);
    const bearer = { authorization: `Bearer ${token}` };
    t.equal((await get(`${sd.url}/v2/lab/app/tags/list`, certs.ca, node1, bearer)).status, 404, 'with the certificate: past auth (the repository is empty)');
    const stolen = await get(`${sd.url}/v2/lab/app/tags/list`, certs.ca, null, bearer);
    t.equal(stolen.status, 401, 'without it: refused');
    t.match(stolen.body, /issued to the client certificate of cn:node-1/);
  });

  await t.test('a certificate from another CA is refused with 403 even where none is required: never an identity, never anonymous', async (t) => {
    const other = await pki(t, ['node-1']);
    const answer = await get(`${sd.url}/v2/lab/app/tags/list`, certs.ca, other.client('node-1'));
    t.equal(answer.status, 403);
    t.match(answer.body, /the client certificate is refused: the certificate CN=node-1 \(serial [0-9A-F]+\) does not chain to tls\.clientCA/);
    t.equal(sd.requestLogs().findLast((l) => l.path === '/v2/lab/app/tags/list')?.user, undefined, 'the access line names nobody');
  });

  await t.test('a certificate without the client-authentication key usage (the server\'s own) is refused', async (t) => {
    const answer = await get(`${sd.url}/v2/lab/app/tags/list`, certs.ca, { cert: certs.cert, key: certs.key });
    t.equal(answer.status, 403);
    t.match(answer.body, /is not for client authentication/);
  });

  await t.test('Basic credentials on a connection presenting a certificate name their user', async (t) => {
    const basic = { authorization: `Basic ${Buffer.from('alice:Al1ce-mtls-pass').toString('base64')}` };
    t.equal((await get(`${sd.url}/v2/lab/app/tags/list`, certs.ca, node1, basic)).status, 404);
    const line = sd.requestLogs().findLast((l) => l.path === '/v2/lab/app/tags/list');
    t.equal(line?.user, 'alice');
  });
});

t.test('a client CA bundle replaced on disk is used for new connections, without a restart', async (t) => {
  const [first, second] = await Promise.all([pki(t, ['node-1']), pki(t, ['node-1'])]);
  const bundle = path.join(first.dir, 'clients-ca.crt');
  copyFileSync(first.caCert, bundle);
  const sd = await startStevedore(t, {
    upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } },
    config: {
      registry: { hosted: ['lab/**'] },
      tls: { cert: first.cert, key: first.key, clientCA: bundle, clientAuth: 'required', reloadInterval: '1s' },
      auth: { rules: [{ repository: 'lab/**', users: ['cn:node-1'], actions: ['pull'] }] },
    },
  });
  t.equal((await get(`${sd.url}/v2/lab/app/tags/list`, first.ca, first.client('node-1'))).status, 404, 'the first CA\'s client is let in');
  t.equal((await get(`${sd.url}/v2/lab/app/tags/list`, first.ca, second.client('node-1'))).status, 403, 'the second CA\'s is not');
  copyFileSync(second.caCert, bundle);
  await waitFor('the reload', async () => sd.logs.some((l) => l.msg === 'TLS certificate reloaded: new connections get it'), 10_000);
  t.equal((await get(`${sd.url}/v2/lab/app/tags/list`, first.ca, second.client('node-1'))).status, 404, 'now the second CA\'s client is let in');
  t.equal((await get(`${sd.url}/v2/lab/app/tags/list`, first.ca, first.client('node-1'))).status, 403, 'and the first CA\'s no longer');
});
