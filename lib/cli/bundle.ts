/**
 * `stevedore export` / `stevedore import`: carry images across an air gap as OCI layout archives,
 * with their referrers (signatures, SBOMs, attestations) and cosign tags, and the exporter's trust
 * material. Import verifies each image against the lab's own signature policies before anything is
 * stored; the bundle's trust material is never used for that (`--trust-out` writes it out).
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, promises as fsp } from 'node:fs';
import path from 'node:path';
import type { Config } from '../config/config.js';
import { formatImageRef, type ImageRef } from '../oci/image-ref.js';
import { openStoreForCommand as openStore } from '../storage/open-store.js';
import { DEFAULT_MAX_BUNDLE_ENTRIES, exportBundle, importBundle, resolveStored, TRUST_DIR, type StagedBundle } from '../registry/oci-bundle.js';
import { formatBytes } from '../config/units.js';
import { createLogger } from '../server/logger.js';
import { SignaturePolicies } from '../verify/policies.js';
import { refusal, SignatureGate } from '../verify/signature-gate.js';
import { bundleSource } from '../verify/signature-source.js';
import { trustFiles } from '../verify/trust-files.js';
import { UserError } from './common.js';

/** A manifest checked at import is read whole, at most this (cache.manifestMaxSize's default). */
const MANIFEST_MAX = 4 * 1024 * 1024;

export async function runExport(config: Config, images: ImageRef[], output: string, out: NodeJS.WritableStream = process.stderr): Promise<void> {
  const store = await openStore(config);
  const resolved = [];
  for (const img of images) resolved.push(await resolveStored(store, img));
  const trust = await trustFiles(config.verify, resolved.map((i) => `${i.ref.registry}/${i.ref.name}`));
  const tmp = `${output}.part`;
  try {
    const r = await exportBundle(store, resolved, output === '-' ? process.stdout : createWriteStream(tmp), { files: trust });
    if (output !== '-') await fsp.rename(tmp, output);
    for (const line of r.skipped) out.write(`note: ${line}\n`);
    for (const ref of r.referrers) out.write(`  with ${formatImageRef(ref.ref)} (${ref.mediaType})\n`);
    for (const f of trust) out.write(`  trust ${f.name} ${f.sha256} (from ${f.source})\n`);
    const carried = r.referrers.length ? ` and ${r.referrers.length} referrers and signature tags` : '';
    out.write(`exported ${resolved.map((i) => formatImageRef(i.ref)).join(', ')}${carried}: ${r.blobs} blobs, ${formatBytes(r.bytes)}${output === '-' ? '' : ` → ${output}`}\n`);
  } catch (err) {
    await fsp.rm(tmp, { force: true });
    throw err;
  }
}

export interface ImportFlags {
  maxEntries?: number;
  /** Write the bundle's trust material into this directory (for the operator to review and install). */
  trustOut?: string;
}

/** Writes the bundle's trust files under `dir` (names relative to TRUST_DIR); returns one line per file. */
async function writeTrust(bundle: StagedBundle, dir: string): Promise<string[]> {
  const lines: string[] = [];
  for (const [name, data] of bundle.trust) {
    // Names were matched against TRUST_ENTRY when read: policy-<i>/key-<k>.pem and the like, no "..".
    const file = path.join(dir, name.slice(TRUST_DIR.length + 1));
    await fsp.mkdir(path.dirname(file), { recursive: true });
    await fsp.writeFile(file, data, { mode: 0o644 });
    lines.push(`wrote ${file} sha256:${createHash('sha256').update(data).digest('hex')}`);
  }
  return lines;
}

/**
 * The lab's policies against every entry of the bundle, before anything is stored: under `require`
 * one image that does not verify refuses the whole bundle (naming each, its policy and the reason);
 * under `warn` it is imported, with a warning line and the log line a pull would write.
 */
async function checkSignatures(config: Config, policies: SignaturePolicies, bundle: StagedBundle, out: NodeJS.WritableStream): Promise<void> {
  if (policies.policies.length === 0) return;
  const log = createLogger(config.log.level === 'info' ? 'warn' : config.log.level, process.stderr);
  const gate = new SignatureGate({ policies, log });
  const refused: string[] = [];
  for (const entry of bundle.entries) {
    const repo = { upstream: entry.ref.registry, name: entry.ref.name };
    const repository = `${repo.upstream}/${repo.name}`;
    if (!gate.applies(repository)) continue;
    const bytes = await bundle.read(entry.digest, MANIFEST_MAX);
    if (!bytes) throw new UserError(`${formatImageRef(entry.ref)}: manifest ${entry.digest} is larger than ${formatBytes(MANIFEST_MAX)}`);
    const decided = await gate.verdict(bundleSource(bundle, repo), { digest: entry.digest, bytes });
    if (!decided) continue;
    const { policy, verdict } = decided;
    const name = formatImageRef(entry.ref);
    if (verdict.result === 'verified') {
      // Signatures themselves are not checked (they are not runnable): no line for them.
      if (!verdict.reason.startsWith('a signature artifact')) out.write(`verified ${name}: ${verdict.reason} (${policy.name})\n`);
    } else if (policy.mode === 'require') {
      refused.push(`${name}: ${refusal(policy, repository, entry.digest, verdict).message}`);
    } else {
      out.write(`warning ${name}: ${policy.name} (mode warn) finds no valid signature: ${verdict.reason}; imported all the same\n`);
    }
  }
  if (refused.length) throw new UserError(`the bundle is refused by this configuration's signature policies; nothing was imported:\n  ${refused.join('\n  ')}`);
}

export async function runImport(config: Config, input: string, out: NodeJS.WritableStream = process.stderr, opts: ImportFlags = {}): Promise<void> {
  const store = await openStore(config);
  // The lab's own policies, read before the bundle: a bad key file stops here, naming it.
  const policies = await SignaturePolicies.load(config.verify);
  let trustCarried = 0;
  const r = await importBundle(
    store,
    input === '-' ? process.stdin : createReadStream(input),
    { maxEntries: opts.maxEntries ?? DEFAULT_MAX_BUNDLE_ENTRIES, maxSize: config.storage.maxSize },
    {
      check: async (bundle) => {
        trustCarried = bundle.trust.size;
        // Written out before the check: an operator installs it after review, whatever the verdict.
        if (opts.trustOut !== undefined) for (const line of await writeTrust(bundle, opts.trustOut)) out.write(`${line}\n`);
        await checkSignatures(config, policies, bundle, out);
      },
    },
  );
  for (const img of r.images) {
    const configured = config.upstreams.has(img.ref.registry);
    out.write(`imported ${formatImageRef(img.ref)} (${img.digest})${configured ? '' : ` — note: upstream ${img.ref.registry} is not configured, so nothing will pull it`}\n`);
  }
  for (const ref of r.referrers) out.write(`  with ${formatImageRef(ref.ref)} (${ref.mediaType})\n`);
  if (trustCarried > 0 && opts.trustOut === undefined) {
    out.write(`note: the bundle carries trust material (${trustCarried} files under ${TRUST_DIR}/), not used: --trust-out DIR writes it out to review and install\n`);
  }
  const carried = r.referrers.length ? ` and ${r.referrers.length} referrers and signature tags` : '';
  out.write(`imported ${r.images.length} images${carried}: ${r.blobs} blobs, ${formatBytes(r.bytes)}, pinned\n`);
}
