// What one client's failure tells another (security review, issue 25, items 7, 8 and 10): an
// answer names what the asking client asked for, the upstream and the class of a failure, never
// another user's repository, a credential source's details or an upstream's free text in the
// status line. Real CNCF distribution upstreams; a closed port for an unreachable one.
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import bcrypt from 'bcryptjs';
import t from 'tap';
import { MANIFEST_ACCEPT } from '../fixtures/images.js';
import { rawRequest, ociErrors } from '../fixtures/http-client.js';
import { startRegistry } from '../fixtures/registry.js';
import { startStevedore } from '../fixtures/stevedore.js';
import { tmpDir } from '../fixtures/util.js';

const ALICE = `Basic ${Buffer.from('alice:Al1ce-pw').toString('base64')}`;
const BOB = `Basic ${Buffer.from('bob:B0b-pw').toString('base64')}`;

t.test("an open breaker's answer names the failure's class, not the repository and reference of the request that failed", async (t) => {
  const htpasswd = path.join(await tmpDir(t), 'htpasswd');
  await writeFile(htpasswd, `alice:${bcrypt.hashSync('Al1ce-pw', 4)}\nbob:${bcrypt.hashSync('B0b-pw', 4)}\n`);
  const sd = await startStevedore(t, {
    upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } },
    config: {
      upstreamPolicy: { breakerFailures: 1, breakerOpenFor: '1m' },
      auth: {
        htpasswd,
        anonymousPull: false,
        rules: [
          { repository: 'docker.io/acme/**', users: ['alice'], actions: ['pull'] },
          { repository: 'docker.io/library/**', users: ['anonymous', '*'], actions: ['pull'] },
        ],
      },
    },
  });
  // Alice's pull of her private repository fails, and opens the breaker.
  const hers = await rawRequest(`${sd.url}/v2/acme/secret-project/manifests/release-candidate-7`, { headers: { authorization: ALICE, accept: MANIFEST_ACCEPT } });
  t.equal(hers.status, 502, "alice's pull fails: the upstream is unreachable");
  t.match(hers.statusMessage, /secret-project:release-candidate-7/, 'her own answer names what she asked for');

  // Anyone else now gets the breaker's answer.
  const other = await rawRequest(`${sd.url}/v2/library/app/manifests/1.0`, { headers: { accept: MANIFEST_ACCEPT } });
  t.equal(other.status, 502);
  t.match(other.statusMessage, /circuit open after 1 consecutive failures \(the last: upstream docker\.io unreachable \(ECONNREFUSED\)\)/, 'the breaker says why, by class');
  t.match(other.statusMessage, /not contacted for manifest library\/app:1\.0/, 'and what this client asked for');
  for (const [what, text] of [
    ['status line', other.statusMessage],
    ['body', other.body.toString()],
  ] as const) {
    t.notMatch(text, /secret-project|release-candidate-7|acme/, `the ${what} names nothing of alice's request`);
  }
  const state = await rawRequest(`${sd.url}/ui/api/state`, { headers: { authorization: BOB } });
  t.equal(state.status, 200, 'bob may see the dashboard');
  t.match(state.body.toString(), /not contacted for manifest library\/app:1\.0/, "it lists the breaker's answer to library/app, which bob may pull");
  t.notMatch(state.body.toString(), /secret-project|release-candidate-7/, "and nothing of alice's request");
  t.equal(ociErrors(other)?.[0]?.code, 'UPSTREAM_UNAVAILABLE');
});

t.test("an upstream's error text is never in the status line, only quoted as its words in the body; its code is", async (t) => {
  const reg = await startRegistry();
  t.teardown(() => reg.stop());
  const sd = await startStevedore(t, { upstreams: { 'docker.io': { url: reg.url } } });
  const PHISH = 'Your account is suspended - verify it at https://evil.example/login within 24 hours';
  const cases = [
    { status: 400, code: 'NAME_INVALID', answered: 400, answeredCode: 'NAME_INVALID' },
    { status: 410, code: 'DENIED', answered: 502, answeredCode: 'UPSTREAM_UNAVAILABLE' },
  ];
  for (const c of cases) {
    reg.setFault({ kind: 'status', status: c.status, body: JSON.stringify({ errors: [{ code: c.code, message: PHISH }] }) });
    const r = await rawRequest(`${sd.url}/v2/library/app/manifests/v${c.status}`, { headers: { accept: MANIFEST_ACCEPT } });
    t.equal(r.status, c.answered, `upstream ${c.status}: answered ${c.answered}`);
    t.equal(ociErrors(r)?.[0]?.code, c.answeredCode);
    t.notMatch(r.statusMessage, /suspended|evil\.example|verify/, `upstream ${c.status}: none of its text in the status line`);
    t.match(r.statusMessage, new RegExp(`upstream docker\\.io answered ${c.status} on manifest library/app:v${c.status} \\(${c.code}\\)`), 'which names the upstream, its status and its code');
    t.match(ociErrors(r)?.[0]?.message, `the upstream's message: ${JSON.stringify(PHISH)}`, 'the body quotes it, as the upstream\'s words');
  }
  reg.setFault(null);
});
