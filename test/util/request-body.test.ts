// readBoundedBody (lib/util/request-body.ts): the small bodies stevedore reads whole (the token
// endpoint's form, a pre-heat request) are read up to a bound, and a client that hangs up is an error.
import { createServer, request, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import t, { type Test } from 'tap';
import { readBoundedBody } from '../../lib/util/request-body.js';

class TooLarge extends Error {}

/** A server that reads each request's body with readBoundedBody(max) and hands the outcome over. */
async function reader(t: Test, max: number): Promise<{ port: number; outcome: Promise<string | Error> }> {
  let settle!: (v: string | Error) => void;
  const outcome = new Promise<string | Error>((r) => (settle = r));
  const server = createServer((req: IncomingMessage, res) => {
    readBoundedBody(req, max, () => new TooLarge(`over ${max}`)).then(
      (body) => {
        settle(body);
        res.end('ok');
      },
      (err: Error) => {
        settle(err);
        res.destroy();
      },
    );
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    server.closeAllConnections();
    return new Promise<void>((r) => server.close(() => r()));
  });
  return { port: (server.address() as AddressInfo).port, outcome };
}

function send(port: number, headers: Record<string, string>, chunks: string[], end = true): void {
  const req = request({ host: '127.0.0.1', port, method: 'POST', path: '/', headers });
  req.on('error', () => undefined);
  for (const c of chunks) req.write(c);
  if (end) req.end();
  else setTimeout(() => req.destroy(), 100);
}

t.test('a body within the bound is read whole, as UTF-8', async (t) => {
  const { port, outcome } = await reader(t, 64);
  send(port, { 'content-type': 'application/json' }, ['{"a":', '"é"}']);
  t.equal(await outcome, '{"a":"é"}');
});

t.test('a declared Content-Length past the bound is refused before any byte is read', async (t) => {
  const { port, outcome } = await reader(t, 64);
  send(port, { 'content-length': '65' }, ['x'.repeat(65)]);
  t.type(await outcome, TooLarge);
});

t.test('a chunked body that grows past the bound is refused when it does', async (t) => {
  const { port, outcome } = await reader(t, 64);
  send(port, { 'transfer-encoding': 'chunked' }, ['x'.repeat(40), 'x'.repeat(40)]);
  t.type(await outcome, TooLarge);
});

t.test('a client that hangs up mid-body is an error, not a hang', async (t) => {
  const { port, outcome } = await reader(t, 64);
  send(port, { 'content-length': '50' }, ['x'.repeat(10)], false);
  const got = await outcome;
  t.type(got, Error);
  t.notOk(got instanceof TooLarge);
});
