/** Seeding the upstream through the registry API: monolithic blob uploads (streamed) and manifest PUTs. */
import { Readable } from 'node:stream';
import { request } from 'undici';
import { contentChunks, type BlobSpec, type ImageSpec, MediaType } from './data.js';

async function call(
  method: 'HEAD' | 'GET' | 'POST' | 'PUT',
  url: string,
  opts: { headers?: Record<string, string>; body?: Buffer | Readable } = {},
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; text: string }> {
  const res = await request(url, { method, headers: opts.headers ?? {}, body: opts.body ?? null, headersTimeout: 120_000, bodyTimeout: 120_000 });
  const text = await res.body.text();
  return { status: res.statusCode, headers: res.headers, text };
}

function header(h: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

/** Uploads `data` (or the generated content of `spec`) as one blob of `repo`, unless already there. */
export async function pushBlob(base: string, repo: string, digest: string, size: number, body: () => Buffer | Readable): Promise<void> {
  const head = await call('HEAD', `${base}/v2/${repo}/blobs/${digest}`);
  if (head.status === 200) return;
  const post = await call('POST', `${base}/v2/${repo}/blobs/uploads/`);
  const location = header(post.headers, 'location');
  if (post.status !== 202 || !location) throw new Error(`seed: POST upload in ${repo}: ${post.status} ${post.text}`);
  const put = new URL(location, base);
  put.searchParams.set('digest', digest);
  const res = await call('PUT', put.toString(), {
    headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
    body: body(),
  });
  if (res.status !== 201) throw new Error(`seed: PUT blob ${digest}: ${res.status} ${res.text}`);
}

export function pushGenerated(base: string, repo: string, spec: BlobSpec): Promise<void> {
  return pushBlob(base, repo, spec.digest, spec.size, () => Readable.from(contentChunks(spec.seed, spec.size)));
}

export async function pushManifest(base: string, repo: string, ref: string, bytes: Buffer, mediaType: string = MediaType.dockerManifest): Promise<void> {
  const res = await call('PUT', `${base}/v2/${repo}/manifests/${ref}`, { headers: { 'content-type': mediaType }, body: bytes });
  if (res.status !== 201) throw new Error(`seed: PUT manifest ${repo}:${ref}: ${res.status} ${res.text}`);
}

export async function pushImage(base: string, repo: string, tag: string, img: ImageSpec): Promise<void> {
  await pushBlob(base, repo, img.configDigest, img.config.length, () => img.config);
  for (const l of img.layers) await pushGenerated(base, repo, l);
  await pushManifest(base, repo, tag, img.manifest);
}
