// `stevedore containerd-config`: the hosts.toml it renders for one mirror (unchanged) and for
// several (a node-local stevedore first, the central one second: containerd tries them in file
// order), how each --mirror is checked, and the command itself with --mirror repeated; `--ca`, and
// `--containerd-version 1|2` (the config.toml lines printed, and containerd 2.x's `_default`).
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import {
  configTomlSnippet,
  mirrorOrigins,
  parseContainerdVersion,
  renderDefaultHostsToml,
  renderHostsToml,
  writeHostsTomls,
} from '../../lib/cli/containerd-config.js';
import { stevedoreCli } from '../fixtures/cli.js';
import { tmpDir } from '../fixtures/util.js';

const NODE = 'http://127.0.0.1:5001';
const CENTRAL = 'http://stevedore.stevedore.svc:5000';

t.test('one mirror renders the same file as before --mirror could be repeated', async (t) => {
  const expected = [
    '# containerd hosts.toml for docker.io: pull through stevedore, fall back to the registry.',
    '# Written by `stevedore containerd-config`.',
    'server = "https://registry-1.docker.io"',
    '',
    '[host."http://stevedore.example:5000"]',
    '  capabilities = ["pull", "resolve"]',
    '',
  ].join('\n');
  t.equal(renderHostsToml('docker.io', 'http://stevedore.example:5000'), expected);
  t.equal(renderHostsToml('docker.io', ['http://stevedore.example:5000']), expected, 'a list of one is the same file');
});

t.test('two mirrors render two host sections, node-local first, both pull and resolve, server still the registry', async (t) => {
  t.equal(
    renderHostsToml('docker.io', [NODE, CENTRAL]),
    [
      '# containerd hosts.toml for docker.io: pull through stevedore (each host below in turn), fall back to the registry.',
      '# Written by `stevedore containerd-config`.',
      'server = "https://registry-1.docker.io"',
      '',
      '[host."http://127.0.0.1:5001"]',
      '  capabilities = ["pull", "resolve"]',
      '',
      '[host."http://stevedore.stevedore.svc:5000"]',
      '  capabilities = ["pull", "resolve"]',
      '',
    ].join('\n'),
  );
  t.match(renderHostsToml('ghcr.io', [NODE, CENTRAL]), /^server = "https:\/\/ghcr\.io"$/m, 'another registry falls back to itself');
});

t.test('the host sections keep the order the mirrors were given in', async (t) => {
  const hosts = (toml: string): string[] => [...toml.matchAll(/^\[host\."([^"]+)"\]$/gm)].map((m) => m[1]!);
  t.same(hosts(renderHostsToml('docker.io', [NODE, CENTRAL])), [NODE, CENTRAL]);
  t.same(hosts(renderHostsToml('docker.io', [CENTRAL, NODE])), [CENTRAL, NODE]);
});

t.test('skip_verify is written under every host', async (t) => {
  const toml = renderHostsToml('docker.io', ['https://node.example:5001', 'https://central.example:5000'], { skipVerify: true });
  t.equal(toml.match(/^ {2}skip_verify = true$/gm)?.length, 2);
  t.match(toml, /\[host\."https:\/\/node\.example:5001"\]\n {2}capabilities = \["pull", "resolve"\]\n {2}skip_verify = true\n\n\[host\./);
});

t.test('each mirror is reduced to its origin, order kept', async (t) => {
  t.same(mirrorOrigins(['http://127.0.0.1:5001/', 'HTTP://Stevedore.Stevedore.svc:5000']), [NODE, CENTRAL]);
});

t.test('a bad second mirror is refused with a message naming it and its place', async (t) => {
  t.throws(() => mirrorOrigins([NODE, 'ftp://central:5000']), { message: '--mirror must be http(s)://HOST[:PORT] with no path, got ftp://central:5000 (--mirror 2 of 2)' });
  t.throws(() => mirrorOrigins([NODE, 'http://central:5000/v2']), { message: /got http:\/\/central:5000\/v2 \(--mirror 2 of 2\)$/ }, 'a path');
  t.throws(() => mirrorOrigins([NODE, 'http://central:5000/?x=1']), { message: /\(--mirror 2 of 2\)$/ }, 'a query');
  t.throws(() => mirrorOrigins([NODE, 'central:5000']), { message: /got central:5000 \(--mirror 2 of 2\)$/ }, 'no scheme');
  t.throws(() => mirrorOrigins([NODE, 'not a url']), { message: /^--mirror must be http\(s\):\/\/HOST\[:PORT\] with no path, got not a url/ }, 'not a URL at all');
});

t.test('a single bad mirror gets the message it always got', async (t) => {
  t.throws(() => mirrorOrigins(['ftp://x']), { message: '--mirror must be http(s)://HOST[:PORT] with no path, got ftp://x' });
});

t.test('the same mirror twice is refused (it would define one TOML table twice)', async (t) => {
  t.throws(() => mirrorOrigins([NODE, 'http://127.0.0.1:5001/']), { message: '--mirror http://127.0.0.1:5001 is given twice (--mirror 2 of 2)' });
});

t.test('no mirror at all is refused', async (t) => {
  t.throws(() => mirrorOrigins([]), { message: 'at least one --mirror is needed' });
});

t.test('writeHostsTomls writes nothing when the second mirror is bad', async (t) => {
  const dir = await tmpDir(t);
  await t.rejects(writeHostsTomls(dir, ['docker.io', 'ghcr.io'], [NODE, 'ftp://central']), { message: /\(--mirror 2 of 2\)$/ });
  t.same(await fsp.readdir(dir), [], 'no file, no directory');
});

t.test('containerd-config --mirror twice writes both hosts, in order, for every registry', async (t) => {
  const dir = await tmpDir(t);
  const r = await stevedoreCli(['containerd-config', '--mirror', NODE, '--mirror', CENTRAL, '--registries', 'docker.io,quay.io', '--dir', dir]);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout, `wrote ${path.join(dir, 'docker.io', 'hosts.toml')}\nwrote ${path.join(dir, 'quay.io', 'hosts.toml')}\n`);
  t.equal(await fsp.readFile(path.join(dir, 'docker.io', 'hosts.toml'), 'utf8'), renderHostsToml('docker.io', [NODE, CENTRAL]));
  t.equal(await fsp.readFile(path.join(dir, 'quay.io', 'hosts.toml'), 'utf8'), renderHostsToml('quay.io', [NODE, CENTRAL]));
});

t.test('containerd-config with a bad second --mirror exits 1, says which, and writes nothing', async (t) => {
  const dir = await tmpDir(t);
  const r = await stevedoreCli(['containerd-config', '--mirror', NODE, '--mirror', 'stevedore.stevedore.svc:5000', '--dir', dir]);
  t.equal(r.code, 1);
  t.equal(r.stderr, 'stevedore: --mirror must be http(s)://HOST[:PORT] with no path, got stevedore.stevedore.svc:5000 (--mirror 2 of 2)\n');
  t.same(await fsp.readdir(dir), []);
});

const CA = '/etc/containerd/certs.d/stevedore-ca.pem';

t.test('--ca writes ca under every host, after capabilities, and no skip_verify', async (t) => {
  t.equal(
    renderHostsToml('docker.io', ['https://node.example:5001', 'https://central.example:5000'], { ca: CA }),
    [
      '# containerd hosts.toml for docker.io: pull through stevedore (each host below in turn), fall back to the registry.',
      '# Written by `stevedore containerd-config`.',
      'server = "https://registry-1.docker.io"',
      '',
      '[host."https://node.example:5001"]',
      '  capabilities = ["pull", "resolve"]',
      '  ca = "/etc/containerd/certs.d/stevedore-ca.pem"',
      '',
      '[host."https://central.example:5000"]',
      '  capabilities = ["pull", "resolve"]',
      '  ca = "/etc/containerd/certs.d/stevedore-ca.pem"',
      '',
    ].join('\n'),
  );
});

t.test('a CA path is written as a TOML string, quotes and backslashes escaped', async (t) => {
  t.match(renderHostsToml('docker.io', 'https://m:5000', { ca: '/etc/my "ca"\\x.pem' }), /^ {2}ca = "\/etc\/my \\"ca\\"\\\\x\.pem"$/m);
});

t.test('--ca together with skip_verify is refused', async (t) => {
  t.throws(() => renderHostsToml('docker.io', 'https://m:5000', { ca: CA, skipVerify: true }), {
    message: '--ca and --skip-verify exclude each other: with a CA the mirror is verified',
  });
});

t.test('a relative --ca is refused (containerd would read it relative to each hosts.toml)', async (t) => {
  t.throws(() => renderHostsToml('docker.io', 'https://m:5000', { ca: 'ca.pem' }), { message: '--ca must be an absolute path (as containerd on the node reads it), got ca.pem' });
});

t.test('_default/hosts.toml names every mirror and no server', async (t) => {
  t.equal(
    renderDefaultHostsToml([NODE, CENTRAL]),
    [
      '# containerd hosts.toml for every registry without a directory of its own: pull through stevedore,',
      "# then from the registry itself (no `server`: containerd falls back to the image's registry).",
      '# Written by `stevedore containerd-config`.',
      '',
      '[host."http://127.0.0.1:5001"]',
      '  capabilities = ["pull", "resolve"]',
      '',
      '[host."http://stevedore.stevedore.svc:5000"]',
      '  capabilities = ["pull", "resolve"]',
      '',
    ].join('\n'),
  );
  t.match(renderDefaultHostsToml('https://m:5000', { ca: CA }), /\[host\."https:\/\/m:5000"\]\n {2}capabilities = \["pull", "resolve"\]\n {2}ca = "\/etc\/containerd\/certs\.d\/stevedore-ca\.pem"\n$/);
});

t.test('the config.toml lines for containerd 1.x and 2.x', async (t) => {
  t.equal(
    configTomlSnippet(1, '/etc/containerd/certs.d'),
    [
      '# Add to /etc/containerd/config.toml (containerd 1.6 / 1.7, a config with `version = 2`), then restart containerd:',
      '[plugins."io.containerd.grpc.v1.cri".registry]',
      '  config_path = "/etc/containerd/certs.d"',
      '',
    ].join('\n'),
  );
  t.equal(
    configTomlSnippet(2, '/etc/containerd/certs.d'),
    [
      '# Add to /etc/containerd/config.toml (containerd 2.x, a config with `version = 3`), then restart containerd.',
      '# One directory only: containerd 2.1+ pulls through its transfer service, which does not split a',
      '# "dir1:dir2" list.',
      '[plugins."io.containerd.cri.v1.images".registry]',
      '  config_path = "/etc/containerd/certs.d"',
      '',
    ].join('\n'),
  );
});

t.test('--containerd-version accepts 1 and 2 only', async (t) => {
  t.equal(parseContainerdVersion('1'), 1);
  t.equal(parseContainerdVersion('2'), 2);
  for (const bad of ['3', '1.7', 'v2', '']) {
    t.throws(() => parseContainerdVersion(bad), { message: `--containerd-version must be 1 (containerd 1.6 / 1.7) or 2 (containerd 2.x), got ${bad}` });
  }
});

t.test('containerd-config without --containerd-version prints only the files written, as before', async (t) => {
  const dir = await tmpDir(t);
  const r = await stevedoreCli(['containerd-config', '--mirror', CENTRAL, '--registries', 'docker.io', '--dir', dir]);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout, `wrote ${path.join(dir, 'docker.io', 'hosts.toml')}\n`);
  t.same(await fsp.readdir(dir), ['docker.io'], 'no _default');
  t.equal(await fsp.readFile(path.join(dir, 'docker.io', 'hosts.toml'), 'utf8'), renderHostsToml('docker.io', CENTRAL));
});

t.test('containerd-config --containerd-version 1 writes the same files and prints the 1.x config.toml lines', async (t) => {
  const dir = await tmpDir(t);
  const r = await stevedoreCli(['containerd-config', '--mirror', CENTRAL, '--registries', 'docker.io,quay.io', '--dir', dir, '--containerd-version', '1']);
  t.equal(r.code, 0, r.stderr);
  t.equal(
    r.stdout,
    [
      `wrote ${path.join(dir, 'docker.io', 'hosts.toml')}`,
      `wrote ${path.join(dir, 'quay.io', 'hosts.toml')}`,
      '',
      '# Add to /etc/containerd/config.toml (containerd 1.6 / 1.7, a config with `version = 2`), then restart containerd:',
      '[plugins."io.containerd.grpc.v1.cri".registry]',
      `  config_path = ${JSON.stringify(dir)}`,
      '',
    ].join('\n'),
  );
  t.same((await fsp.readdir(dir)).sort(), ['docker.io', 'quay.io'], 'no _default');
});

t.test('containerd-config --containerd-version 2 --ca writes _default too and prints the 2.x config.toml lines', async (t) => {
  const dir = await tmpDir(t);
  const r = await stevedoreCli([
    'containerd-config',
    '--mirror',
    'https://stevedore.example:5000',
    '--registries',
    'docker.io',
    '--dir',
    dir,
    '--ca',
    CA,
    '--containerd-version',
    '2',
  ]);
  t.equal(r.code, 0, r.stderr);
  t.equal(
    r.stdout,
    [
      `wrote ${path.join(dir, 'docker.io', 'hosts.toml')}`,
      `wrote ${path.join(dir, '_default', 'hosts.toml')}`,
      '',
      '# Add to /etc/containerd/config.toml (containerd 2.x, a config with `version = 3`), then restart containerd.',
      '# One directory only: containerd 2.1+ pulls through its transfer service, which does not split a',
      '# "dir1:dir2" list.',
      '[plugins."io.containerd.cri.v1.images".registry]',
      `  config_path = ${JSON.stringify(dir)}`,
      '',
    ].join('\n'),
  );
  t.equal(await fsp.readFile(path.join(dir, 'docker.io', 'hosts.toml'), 'utf8'), renderHostsToml('docker.io', 'https://stevedore.example:5000', { ca: CA }));
  t.equal(await fsp.readFile(path.join(dir, '_default', 'hosts.toml'), 'utf8'), renderDefaultHostsToml('https://stevedore.example:5000', { ca: CA }));
});

t.test('containerd-config --ca with --skip-verify exits 1 and writes nothing', async (t) => {
  const dir = await tmpDir(t);
  const r = await stevedoreCli(['containerd-config', '--mirror', 'https://m:5000', '--dir', dir, '--ca', CA, '--skip-verify']);
  t.equal(r.code, 1);
  t.equal(r.stderr, 'stevedore: --ca and --skip-verify exclude each other: with a CA the mirror is verified\n');
  t.same(await fsp.readdir(dir), []);
});

t.test('containerd-config --containerd-version 3 exits 1 and writes nothing', async (t) => {
  const dir = await tmpDir(t);
  const r = await stevedoreCli(['containerd-config', '--mirror', CENTRAL, '--dir', dir, '--containerd-version', '3']);
  t.equal(r.code, 1);
  t.equal(r.stderr, 'stevedore: --containerd-version must be 1 (containerd 1.6 / 1.7) or 2 (containerd 2.x), got 3\n');
  t.same(await fsp.readdir(dir), []);
});

// ---------------------------------------------------------------- client certificates (tls.clientCA)

const CLIENT_CERT = '/etc/containerd/certs.d/client-node-1.crt';
const CLIENT_KEY = '/etc/containerd/certs.d/client-node-1.key';

t.test('containerd-config --client-cert --client-key writes client = [[cert, key]] under every host, after ca', async (t) => {
  const dir = await tmpDir(t);
  const r = await stevedoreCli(['containerd-config', '--mirror', 'https://m:5000', '--registries', 'docker.io,ghcr.io', '--dir', dir, '--ca', CA, '--client-cert', CLIENT_CERT, '--client-key', CLIENT_KEY]);
  t.equal(r.code, 0, r.stderr);
  for (const registry of ['docker.io', 'ghcr.io']) {
    const text = await fsp.readFile(path.join(dir, registry, 'hosts.toml'), 'utf8');
    t.match(
      text,
      ['[host."https://m:5000"]', '  capabilities = ["pull", "resolve"]', `  ca = "${CA}"`, `  client = [["${CLIENT_CERT}", "${CLIENT_KEY}"]]`, ''].join('\n'),
      `${registry}: the client line under the host`,
    );
  }
});

t.test('--client-cert without --client-key is refused, and nothing is written', async (t) => {
  const dir = await tmpDir(t);
  const r = await stevedoreCli(['containerd-config', '--mirror', 'https://m:5000', '--dir', dir, '--client-cert', CLIENT_CERT]);
  t.equal(r.code, 1);
  t.equal(r.stderr, 'stevedore: --client-cert and --client-key go together (a client certificate and its key)\n');
  t.same(await fsp.readdir(dir), []);
});

t.test('a relative --client-key is refused (containerd would read it relative to each hosts.toml)', async (t) => {
  t.throws(() => renderHostsToml('docker.io', 'https://m:5000', { clientCert: CLIENT_CERT, clientKey: 'node.key' }), {
    message: '--client-key must be an absolute path (as containerd on the node reads it), got node.key',
  });
});

t.test('a client certificate with only plain-http mirrors is refused: it is presented over TLS only', async (t) => {
  t.throws(() => renderHostsToml('docker.io', [NODE, CENTRAL], { clientCert: CLIENT_CERT, clientKey: CLIENT_KEY }), { message: /--client-cert is presented over TLS only/ });
});
