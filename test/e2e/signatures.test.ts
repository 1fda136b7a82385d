// Signature policies (issue 29, part 1): manifests of a repository under a `verify` policy are
// served only when validly signed — sigstore bundles attached as OCI referrers by @sigstore/oci
// (key-based, and keyless against @sigstore/mock's Fulcio/Rekor), and legacy cosign `.sig` tags
// written as cosign's specification describes — and refused with 403 DENIED and the reason
// otherwise. One real registry (CNCF distribution) for the whole file.
import t, { type Test } from 'tap';
import { buildOciImage, buildOciIndex, makeBlob, MANIFEST_ACCEPT, pushImage } from '../fixtures/images.js';
import { ociErrors, rawRequest, type RawResponse } from '../fixtures/http-client.js';
import { startRegistry } from '../fixtures/registry.js';
import { startStevedore, type Stevedore } from '../fixtures/stevedore.js';
import { attachBundle, attachNotationLike, dsseBundle, keyPair, messageBundle, pushCosignSig, pushKeylessCosignSig, simpleSigningPayload, startSigstoreMock } from '../fixtures/signing.js';
import { skopeoInspect } from '../fixtures/skopeo.js';
import { verifySchema } from '../../lib/config/verify-schema.js';

const reg = await startRegistry();
t.teardown(() => reg.stop());
const good = await keyPair(t, 'ec');
const rsa = await keyPair(t, 'rsa');
const other = await keyPair(t, 'ec');
const mock = await startSigstoreMock(t);

const ISSUER = 'https://issuer.example';

function policies(mode: 'require' | 'warn', keys = [good.publicKeyFile, rsa.publicKeyFile]): Record<string, unknown> {
  return {
    verify: {
      policies: [
        {
          repository: 'ghcr.io/keyless/**',
          mode,
          keyless: { trustedRoot: mock.trustedRootFile, identities: [{ subject: 'dev@example.com', issuer: ISSUER }, { subjectRegExp: 'https://ci\\.example/org/.+', issuerRegExp: 'https://ci\\.example' }] },
        },
        { repository: 'ghcr.io/lab/**', mode, keys },
      ],
    },
  };
}

async function start(config: Record<string, unknown>): Promise<Stevedore> {
  return startStevedore(t, { upstreams: { 'ghcr.io': { url: reg.url } }, defaultUpstream: 'ghcr.io', config });
}

const sd = await start(policies('require'));

const manifests = new Map<string, Buffer>();

/** Pushes an image to the upstream; its manifest digest. */
async function image(repo: string, seed = repo): Promise<string> {
  const img = buildOciImage(seed, { layers: 1, layerSize: 64 });
  await pushImage(reg.url, repo, 'v1', img);
  manifests.set(img.manifest.digest, img.manifest.data);
  return img.manifest.digest;
}

function get(s: Stevedore, repo: string, ref: string): Promise<RawResponse> {
  return rawRequest(`${s.url}/v2/${repo}/manifests/${ref}`, { headers: { accept: MANIFEST_ACCEPT } });
}

function denied(t: Test, r: RawResponse, reason: RegExp): void {
  t.equal(r.status, 403, 'refused');
  const errors = ociErrors(r);
  t.equal(errors?.[0]?.code, 'DENIED');
  t.match(errors?.[0]?.message, reason, 'the reason is in the body');
}

t.test('an image signed with a key-based sigstore bundle attached as a referrer is served, to skopeo too', async (t) => {
  const digest = await image('lab/bundle-key');
  await attachBundle(reg.directHost, 'lab/bundle-key', digest, await dsseBundle(good.signer, [], digest));
  const r = await get(sd, 'lab/bundle-key', 'v1');
  t.equal(r.status, 200);
  t.equal(r.headers['docker-content-digest'], digest);
  const inspect = await skopeoInspect(`docker://${sd.host}/lab/bundle-key:v1`);
  t.equal(inspect.code, 0, inspect.stderr);
});

t.test('an unsigned image is refused with 403 DENIED naming the policy and "no signature"', async (t) => {
  await image('lab/unsigned');
  const r = await get(sd, 'lab/unsigned', 'v1');
  denied(t, r, /verify\.policies\[1\] \(ghcr\.io\/lab\/\*\*\) requires a valid signature: .*no signature/);
  t.ok(sd.logs.some((l) => l.msg === 'signature check failed: refused' && l.repository === 'ghcr.io/lab/unsigned' && l.result === 'unsigned'), 'logged');
  const inspect = await skopeoInspect(`docker://${sd.host}/lab/unsigned:v1`);
  t.not(inspect.code, 0, 'skopeo fails');
  t.match(inspect.stderr, /no signature/, 'and says why (the status line carries the reason)');
});

t.test('an unsigned runnable image that names a subject (as signatures do) is still checked, and refused', async (t) => {
  const img = buildOciImage('lab/with-subject', { layers: 1, layerSize: 64 });
  const other = await image('lab/with-subject-target');
  const doc = JSON.parse(img.manifest.data.toString('utf8')) as Record<string, unknown>;
  doc.subject = { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: other, size: manifests.get(other)!.length };
  doc.artifactType = 'application/vnd.dev.sigstore.bundle.v0.3+json';
  const disguised = { ...img, manifest: makeBlob(Buffer.from(JSON.stringify(doc)), img.manifest.mediaType) };
  await pushImage(reg.url, 'lab/with-subject', 'v1', disguised);
  const r = await get(sd, 'lab/with-subject', 'v1');
  denied(t, r, /no signature/);
  t.equal((await get(sd, 'lab/with-subject', disguised.manifest.digest)).status, 403, 'by digest too');
});

t.test('a legacy cosign .sig signed with a policy key is served', async (t) => {
  const digest = await image('lab/legacy');
  await pushCosignSig(reg.url, 'lab/legacy', digest, good.privateKey);
  t.equal((await get(sd, 'lab/legacy', 'v1')).status, 200);
  t.equal((await get(sd, 'lab/legacy', digest)).status, 200, 'by digest too');
});

t.test('an RSA-signed legacy .sig is served (any of the policy keys)', async (t) => {
  const digest = await image('lab/legacy-rsa');
  await pushCosignSig(reg.url, 'lab/legacy-rsa', digest, rsa.privateKey);
  t.equal((await get(sd, 'lab/legacy-rsa', 'v1')).status, 200);
});

t.test('an image signed by another key is refused: "signed by another key"', async (t) => {
  const digest = await image('lab/other-key');
  await pushCosignSig(reg.url, 'lab/other-key', digest, other.privateKey);
  await attachBundle(reg.directHost, 'lab/other-key', digest, await dsseBundle(other.signer, [], digest));
  denied(t, await get(sd, 'lab/other-key', 'v1'), /signed by another key/);
});

t.test('a signature for another digest is refused: "signature for another digest"', async (t) => {
  const digest = await image('lab/other-digest');
  const elsewhere = await image('lab/other-digest-2');
  await pushCosignSig(reg.url, 'lab/other-digest', digest, good.privateKey, { signedPayload: simpleSigningPayload(elsewhere, 'lab/other-digest') });
  denied(t, await get(sd, 'lab/other-digest', 'v1'), new RegExp(`signature for another digest \\(${elsewhere}\\)`));
});

t.test('a bundle whose statement names another digest is refused: "signature for another digest"', async (t) => {
  const digest = await image('lab/bundle-other-digest');
  const elsewhere = await image('lab/bundle-other-digest-2');
  await attachBundle(reg.directHost, 'lab/bundle-other-digest', digest, await dsseBundle(good.signer, [], elsewhere));
  denied(t, await get(sd, 'lab/bundle-other-digest', 'v1'), /signature for another digest/);
});

t.test('a payload altered after signing is refused', async (t) => {
  const digest = await image('lab/tampered');
  const signed = simpleSigningPayload(digest, 'lab/tampered');
  const altered = Buffer.from(signed.toString().replace('"optional":null', '"optional":{"by":"someone else"}'));
  await pushCosignSig(reg.url, 'lab/tampered', digest, good.privateKey, { signedPayload: signed, payload: altered });
  denied(t, await get(sd, 'lab/tampered', 'v1'), /altered after signing/);
});

t.test('a keyless bundle from the mock Fulcio/Rekor with an allowed identity is served', async (t) => {
  const digest = await image('keyless/good');
  const k = mock.keyless('dev@example.com', ISSUER);
  await attachBundle(reg.directHost, 'keyless/good', digest, await messageBundle(k.signer, k.witnesses, manifests.get(digest)!));
  const r = await get(sd, 'keyless/good', 'v1');
  t.equal(r.status, 200, r.body.toString());
  t.ok(sd.logs.some((l) => l.msg === 'signature verified' && l.repository === 'ghcr.io/keyless/good' && /dev@example\.com/.test(String(l.reason))));
});

t.test('a keyless identity given as regular expressions is served', async (t) => {
  const digest = await image('keyless/ci');
  const k = mock.keyless('https://ci.example/org/app/build', 'https://ci.example');
  await attachBundle(reg.directHost, 'keyless/ci', digest, await messageBundle(k.signer, k.witnesses, manifests.get(digest)!));
  t.equal((await get(sd, 'keyless/ci', 'v1')).status, 200);
});

t.test('a keyless bundle with another identity is refused: "certificate identity … does not match"', async (t) => {
  const digest = await image('keyless/wrong-subject');
  const k = mock.keyless('intruder@example.com', ISSUER);
  await attachBundle(reg.directHost, 'keyless/wrong-subject', digest, await messageBundle(k.signer, k.witnesses, manifests.get(digest)!));
  denied(t, await get(sd, 'keyless/wrong-subject', 'v1'), /certificate identity "intruder@example\.com" issued by "https:\/\/issuer\.example" does not match/);
});

t.test('a keyless bundle from another issuer is refused', async (t) => {
  const digest = await image('keyless/wrong-issuer');
  const k = mock.keyless('dev@example.com', 'https://other-issuer.example');
  await attachBundle(reg.directHost, 'keyless/wrong-issuer', digest, await messageBundle(k.signer, k.witnesses, manifests.get(digest)!));
  denied(t, await get(sd, 'keyless/wrong-issuer', 'v1'), /issued by "https:\/\/other-issuer\.example" does not match/);
});

t.test('a keyless bundle whose certificate had expired when the log recorded the signature is refused: "expired certificate"', async (t) => {
  const digest = await image('keyless/expired');
  // The mock CA, its clock an hour back: a certificate valid for ten minutes, fifty minutes ago.
  const k = mock.keyless('dev@example.com', ISSUER, { expired: true });
  await attachBundle(reg.directHost, 'keyless/expired', digest, await messageBundle(k.signer, k.witnesses, manifests.get(digest)!));
  denied(t, await get(sd, 'keyless/expired', 'v1'), /expired certificate: it was not valid when the signature was made \(valid from \S+ until \S+, the transparency log recorded the signature at \S+\)/);
});

t.test('a keyless bundle without its transparency-log entry is refused: "log entry missing"', async (t) => {
  const digest = await image('keyless/no-log');
  const k = mock.keyless('dev@example.com', ISSUER, { noLog: true });
  await attachBundle(reg.directHost, 'keyless/no-log', digest, await messageBundle(k.signer, k.witnesses, manifests.get(digest)!));
  denied(t, await get(sd, 'keyless/no-log', 'v1'), /log entry missing: a keyless signature without its transparency-log \(Rekor\) entry/);
});

t.test("a keyless bundle logged by a Rekor the trusted root does not name is refused: its log entry does not verify", async (t) => {
  const digest = await image('keyless/other-log');
  const k = mock.keyless('dev@example.com', ISSUER, { untrustedLog: true });
  await attachBundle(reg.directHost, 'keyless/other-log', digest, await messageBundle(k.signer, k.witnesses, manifests.get(digest)!));
  denied(t, await get(sd, 'keyless/other-log', 'v1'), /transparency-log entry does not verify against the trusted root's logs: .*TLOG_INCLUSION_PROMISE_ERROR/);
});

t.test('a keyless legacy cosign .sig (certificate, chain and Rekor bundle annotations) with an allowed identity is served', async (t) => {
  const digest = await image('keyless/sig');
  await pushKeylessCosignSig(reg.url, 'keyless/sig', digest, mock.keyless('dev@example.com', ISSUER), mock.rootPem);
  const r = await get(sd, 'keyless/sig', 'v1');
  t.equal(r.status, 200, r.body.toString());
  t.ok(sd.logs.some((l) => l.msg === 'signature verified' && l.repository === 'ghcr.io/keyless/sig' && /signed by dev@example\.com \(issuer https:\/\/issuer\.example\)/.test(String(l.reason))));
});

t.test('a keyless legacy .sig with another identity is refused: "certificate identity … does not match"', async (t) => {
  const digest = await image('keyless/sig-intruder');
  await pushKeylessCosignSig(reg.url, 'keyless/sig-intruder', digest, mock.keyless('intruder@example.com', ISSUER), mock.rootPem);
  denied(t, await get(sd, 'keyless/sig-intruder', 'v1'), /certificate identity "intruder@example\.com" issued by "https:\/\/issuer\.example" does not match/);
});

t.test('a keyless legacy .sig without its Rekor bundle annotation is refused: "log entry missing"', async (t) => {
  const digest = await image('keyless/sig-no-log');
  await pushKeylessCosignSig(reg.url, 'keyless/sig-no-log', digest, mock.keyless('dev@example.com', ISSUER, { noLog: true }), mock.rootPem);
  denied(t, await get(sd, 'keyless/sig-no-log', 'v1'), /log entry missing: a keyless cosign \.sig without its Rekor bundle \(dev\.sigstore\.cosign\/bundle annotation\)/);
});

t.test('a keyless legacy .sig whose certificate had expired when it was logged is refused: "expired certificate"', async (t) => {
  const digest = await image('keyless/sig-expired');
  await pushKeylessCosignSig(reg.url, 'keyless/sig-expired', digest, mock.keyless('dev@example.com', ISSUER, { expired: true }), mock.rootPem);
  denied(t, await get(sd, 'keyless/sig-expired', 'v1'), /expired certificate: it was not valid when the signature was made/);
});

t.test('a keyless legacy .sig logged by a Rekor the trusted root does not name is refused', async (t) => {
  const digest = await image('keyless/sig-other-log');
  await pushKeylessCosignSig(reg.url, 'keyless/sig-other-log', digest, mock.keyless('dev@example.com', ISSUER, { untrustedLog: true }), mock.rootPem);
  denied(t, await get(sd, 'keyless/sig-other-log', 'v1'), /transparency-log entry does not verify against the trusted root's logs/);
});

t.test('an image carrying only a Notary Project (notation) signature is refused, the reason saying such signatures are not verified', async (t) => {
  const digest = await image('lab/notation');
  await attachNotationLike(reg.directHost, 'lab/notation', digest);
  const r = await get(sd, 'lab/notation', 'v1');
  denied(t, r, /no signature \(no sigstore bundle referrer, no cosign tag sha256-[0-9a-f]{64}\.sig\); a Notary Project \(notation\) signature was found: stevedore does not verify those/);
  t.equal((ociErrors(r)?.[0]?.detail as { result?: string } | undefined)?.result, 'unsigned');
});

t.test('a signed index covers its platform manifests; an unsigned index does not', async (t) => {
  const signed = buildOciIndex('index/signed', [{ os: 'linux', architecture: 'amd64' }, { os: 'linux', architecture: 'arm64' }], { layers: 1, layerSize: 64 });
  await pushImage(reg.url, 'lab/index', 'v1', signed);
  await pushCosignSig(reg.url, 'lab/index', signed.index.digest, good.privateKey);
  t.equal((await get(sd, 'lab/index', 'v1')).status, 200, 'the index');
  for (const child of signed.images) t.equal((await get(sd, 'lab/index', child.manifest.digest)).status, 200, 'its platform manifest');
  const unsigned = buildOciIndex('index/unsigned', [{ os: 'linux', architecture: 'amd64' }], { layers: 1, layerSize: 64 });
  await pushImage(reg.url, 'lab/index-unsigned', 'v1', unsigned);
  denied(t, await get(sd, 'lab/index-unsigned', unsigned.images[0]!.manifest.digest), /no signature/);
});

t.test('warn mode serves an unsigned image, logs it and counts it', async (t) => {
  const warn = await start(policies('warn'));
  await image('lab/warned');
  const r = await get(warn, 'lab/warned', 'v1');
  t.equal(r.status, 200);
  t.ok(warn.logs.some((l) => l.msg === 'signature check failed: served (policy mode warn)' && l.repository === 'ghcr.io/lab/warned'));
  const metrics = (await rawRequest(`${warn.url}/metrics`)).body.toString();
  t.match(metrics, /stevedore_signature_verifications_total\{result="unsigned"\} 1\n/);
  t.match(metrics, /stevedore_signature_verifications_total\{result="verified"\} 0\n/);
});

t.test('a policy reload is evaluated again, never answered from the old verdict', async (t) => {
  const s = await start(policies('require', [good.publicKeyFile]));
  const digest = await image('lab/rotated');
  await pushCosignSig(reg.url, 'lab/rotated', digest, other.privateKey);
  denied(t, await get(s, 'lab/rotated', 'v1'), /signed by another key/);
  await s.app.reloadSignaturePolicies(verifySchema.parse(policies('require', [other.publicKeyFile]).verify));
  t.equal((await get(s, 'lab/rotated', 'v1')).status, 200, 'the new key is trusted');
  await s.app.reloadSignaturePolicies(verifySchema.parse(policies('require', [good.publicKeyFile]).verify));
  denied(t, await get(s, 'lab/rotated', 'v1'), /signed by another key/);
});

t.test('a hosted repository under a policy: a pushed image with a bundle referrer is served, an unsigned one refused', async (t) => {
  const s = await startStevedore(t, {
    upstreams: { 'ghcr.io': { url: reg.url } },
    defaultUpstream: null,
    config: { registry: { hosted: ['team/**'] }, verify: { policies: [{ repository: 'team/**', keys: [good.publicKeyFile] }] } },
  });
  const img = buildOciImage('hosted/signed', { layers: 1, layerSize: 64 });
  await pushImage(s.url, 'team/app', 'v1', img);
  await attachBundle(s.host, 'team/app', img.manifest.digest, await dsseBundle(good.signer, [], img.manifest.digest));
  t.equal((await get(s, 'team/app', 'v1')).status, 200);
  const bare = buildOciImage('hosted/unsigned', { layers: 1, layerSize: 64 });
  await pushImage(s.url, 'team/bare', 'v1', bare);
  denied(t, await get(s, 'team/bare', 'v1'), /verify\.policies\[0\] \(team\/\*\*\) .*no signature/);
});

t.test('upstream down: a stale tag is verified against the stored signatures; with none stored it is refused (fail closed)', async (t) => {
  const storagePath = `${await (await import('../fixtures/util.js')).tmpDir(t, 'sig-offline-')}/data`;
  const digest = await image('lab/offline');
  await pushCosignSig(reg.url, 'lab/offline', digest, good.privateKey);
  await image('other/stored');
  // First, with the upstream up: lab/offline verified (its signature stored); other/stored under no policy.
  const s1 = await startStevedore(t, { upstreams: { 'ghcr.io': { url: reg.url, tagTTL: '1s' } }, defaultUpstream: 'ghcr.io', storagePath, config: policies('require') });
  t.equal((await get(s1, 'lab/offline', 'v1')).status, 200);
  t.equal((await get(s1, 'other/stored', 'v1')).status, 200);
  await s1.stop();
  reg.setFault({ kind: 'status', status: 503 });
  t.teardown(() => reg.setFault(null));
  const config = { verify: { policies: [{ repository: 'ghcr.io/**', keys: [good.publicKeyFile] }] } };
  const s2 = await startStevedore(t, { upstreams: { 'ghcr.io': { url: reg.url, tagTTL: '1s' } }, defaultUpstream: 'ghcr.io', storagePath, config });
  const served = await get(s2, 'lab/offline', 'v1');
  t.equal(served.status, 200, 'verified offline against the stored .sig');
  t.equal(served.headers['x-cache'], 'stale');
  t.ok(s2.logs.some((l) => l.msg === 'signature verified' && l.repository === 'ghcr.io/lab/offline'));
  denied(t, await get(s2, 'other/stored', 'v1'), /signatures could not be read/);
  reg.setFault(null);
});

t.test('stevedore serve reads the policies again on SIGHUP; a bad reload keeps the ones in force', async (t) => {
  const { spawnStevedore, logsSettled } = await import('../fixtures/stevedore-process.js');
  const { writeFile } = await import('node:fs/promises');
  const digest = await image('lab/hup');
  await pushCosignSig(reg.url, 'lab/hup', digest, other.privateKey);
  const base = { upstreams: { 'ghcr.io': { url: reg.url } }, defaultUpstream: 'ghcr.io', storage: { path: `${await (await import('../fixtures/util.js')).tmpDir(t, 'sig-hup-')}/data` } };
  const withKey = (key: string): Record<string, unknown> => ({ ...base, verify: { policies: [{ repository: 'ghcr.io/lab/**', keys: [key] }] } });
  const p = await spawnStevedore(t, withKey(good.publicKeyFile));
  const url = `${p.url}/v2/lab/hup/manifests/v1`;
  const ask = (): Promise<RawResponse> => rawRequest(url, { headers: { accept: MANIFEST_ACCEPT } });
  denied(t, await ask(), /signed by another key/);
  await writeFile(p.configFile, JSON.stringify({ listen: '127.0.0.1:0', log: { level: 'info' }, ...withKey(other.publicKeyFile) }));
  p.child.kill('SIGHUP');
  const loaded = async (n: number): Promise<void> => {
    for (let i = 0; i < 100 && p.logs.filter((l) => l.msg === 'signature policies loaded' || l.msg === 'signature policies not reloaded: keeping the ones in force').length < n; i++) await new Promise((r) => setTimeout(r, 50));
  };
  await loaded(1);
  t.equal((await ask()).status, 200, 'the reloaded key is trusted');
  await writeFile(p.configFile, JSON.stringify({ listen: '127.0.0.1:0', log: { level: 'info' }, ...withKey('/nonexistent/key.pub') }));
  p.child.kill('SIGHUP');
  await loaded(2);
  await logsSettled(p);
  t.ok(p.logs.some((l) => l.msg === 'signature policies not reloaded: keeping the ones in force' && /keys\[0\]: cannot read/.test(JSON.stringify(l.problems))), 'the bad reload is logged with the key');
  t.equal((await ask()).status, 200, 'the policies in force stay');
});

t.test('what skopeo, podman and ctr print for an image refused by a signature policy: the policy and the reason', async (t) => {
  const { startContainerd, SAFE_FALLBACK_SERVER } = await import('../fixtures/containerd.js');
  const { preparePodman } = await import('../fixtures/podman.js');
  const { skopeoCopy } = await import('../fixtures/skopeo.js');
  const { writeHostsTomls } = await import('../../lib/cli/containerd-config.js');
  const { tmpDir } = await import('../fixtures/util.js');
  const ctrdP = startContainerd();
  t.teardown(async () => (await ctrdP.catch(() => null))?.stop());
  const unsigned = await image('lab/clients-unsigned');
  const otherKey = await image('lab/clients-other-key');
  await pushCosignSig(reg.url, 'lab/clients-other-key', otherKey, other.privateKey);
  const work = await tmpDir(t, 'sig-clients-');
  // podman: ghcr.io's primary location a closed port, its mirror stevedore's path prefix; ctr: hosts.toml, then the closed port.
  const pm = await preparePodman(t, { registriesConf: `[[registry]]\nprefix = "ghcr.io"\nlocation = "127.0.0.1:1"\ninsecure = true\n[[registry.mirror]]\nlocation = "${sd.host}/ghcr.io"\ninsecure = true\n` });
  const ctrd = await ctrdP;
  const hostsDir = `${work}/certs.d`;
  await writeHostsTomls(hostsDir, ['ghcr.io'], [sd.url], { server: SAFE_FALLBACK_SERVER });
  const cases = [
    { repo: 'lab/clients-unsigned', digest: unsigned, reason: `no signature \\(no sigstore bundle referrer, no cosign tag sha256-${unsigned.slice(7)}\\.sig\\)` },
    { repo: 'lab/clients-other-key', digest: otherKey, reason: "not signed by any of the policy's keys \\(signed by another key, or altered after signing\\)" },
  ];
  for (const c of cases) {
    const says = new RegExp(`verify\\.policies\\[1\\] \\(ghcr\\.io/lab/\\*\\*\\) requires a valid signature: ghcr\\.io/${c.repo}@${c.digest}: ${c.reason}`);
    const runs = {
      'skopeo inspect': await skopeoInspect(`docker://${sd.host}/${c.repo}:v1`),
      'skopeo copy': await skopeoCopy(`docker://${sd.host}/${c.repo}:v1`, `dir:${work}/${c.repo.replace('/', '-')}`),
      'podman pull': await pm.pull(`ghcr.io/${c.repo}:v1`),
      'ctr images pull': await ctrd.pull(`ghcr.io/${c.repo}:v1`, { hostsDir }),
    };
    for (const [client, r] of Object.entries(runs)) {
      const output = `${r.stdout}\n${r.stderr}`.trim();
      t.comment(`${client} ${c.repo}:\n${output}`);
      t.not(r.code, 0, `${client} fails on ${c.repo}`);
      t.match(output, says, `${client} prints the policy and the reason for ${c.repo}`);
    }
    // containerd resolves the tag with HEAD (not checked: no content), then GETs the manifest by digest: refused.
    t.match(runs['ctr images pull'].stderr, /403 Forbidden - verify\.policies\[1\]/, 'ctr: the reason comes with the status line');
  }
});
