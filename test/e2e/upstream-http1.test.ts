// undici 8 speaks HTTP/2 to any TLS server that offers it (ALPN); undici 7 never did. stevedore's
// upstream client keeps HTTP/1.1 on purpose: its pool (64 connections an upstream, one download
// a connection, so one slow blob never shares a TCP window with another), its stall detection
// and its Range resumes were built and measured on HTTP/1.1. An HTTPS upstream that offers both
// h2 and http/1.1 sees only HTTP/1.1 from stevedore, for the token-less ping, manifests and blobs.
import { createSecureServer, type Http2ServerRequest, type Http2ServerResponse } from 'node:http2';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { request } from 'undici';
import { buildDockerImage } from '../fixtures/images.js';
import { spawnStevedore } from '../fixtures/stevedore-process.js';
import { makeCertificates } from '../fixtures/tls.js';
import { tmpDir } from '../fixtures/util.js';

t.test('an HTTPS upstream that offers HTTP/2 is spoken to in HTTP/1.1, and its manifest and blobs arrive whole', async (t) => {
  const certs = await makeCertificates(t);
  const img = buildDockerImage('upstream-http1/app', { layers: 1 });
  const versions: string[] = [];
  const server = createSecureServer({ key: readFileSync(certs.key), cert: readFileSync(certs.cert), allowHTTP1: true }, (req: Http2ServerRequest, res: Http2ServerResponse) => {
    versions.push(`${req.httpVersion} ${req.method} ${req.url}`);
    const blob = [img.config, ...img.layers].find((b) => req.url === `/v2/library/app/blobs/${b.digest}`);
    if (req.url === '/v2/') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
    } else if (req.url === '/v2/library/app/manifests/v1') {
      res.writeHead(200, { 'content-type': img.manifest.mediaType, 'docker-content-digest': img.manifest.digest, 'content-length': String(img.manifest.size) });
      if (req.method === 'HEAD') res.end();
      else res.end(img.manifest.data);
    } else if (blob) {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(blob.size) });
      if (req.method === 'HEAD') res.end();
      else res.end(blob.data);
    } else {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end('{"errors":[{"code":"NAME_UNKNOWN","message":"no"}]}');
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const port = (server.address() as { port: number }).port;

  const dir = await tmpDir(t);
  const p = await spawnStevedore(
    t,
    { storage: { path: path.join(dir, 'store') }, defaultUpstream: 'docker.io', upstreams: { 'docker.io': { url: `https://127.0.0.1:${port}` } } },
    { env: { NODE_EXTRA_CA_CERTS: certs.caCert } },
  );

  const manifest = await request(`${p.url}/v2/library/app/manifests/v1`, { headers: { accept: img.manifest.mediaType } });
  t.equal(manifest.statusCode, 200);
  t.ok(Buffer.from(await manifest.body.arrayBuffer()).equals(img.manifest.data), 'the manifest bytes');
  for (const b of [img.config, ...img.layers]) {
    const res = await request(`${p.url}/v2/library/app/blobs/${b.digest}`);
    t.equal(res.statusCode, 200);
    t.ok(Buffer.from(await res.body.arrayBuffer()).equals(b.data), `${b.digest.slice(0, 19)} bytes`);
  }
  t.ok(versions.length >= 3, `the upstream saw ${versions.length} requests`);
  t.same(versions.filter((v) => !v.startsWith('1.1 ')), [], 'every one in HTTP/1.1');
  await p.kill('SIGTERM');
});
