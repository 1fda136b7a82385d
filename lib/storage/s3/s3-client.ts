/**
 * The S3 backend's connection: one S3Client per store (the AWS SDK v3), its credentials, and the
 * few facts about errors the backend relies on.
 *
 * Credentials, first that applies: `accessKeyId` + `secretAccessKey` in the config (`${VAR}` from
 * the environment), `accessKeyIdFile` + `secretAccessKeyFile` (re-read every minute: a mounted
 * Secret that rotates), else the AWS default chain (AWS_ACCESS_KEY_ID, the shared credentials
 * file, IRSA's web identity, ECS / instance metadata).
 */
import type { Agent as HttpAgent } from 'node:http';
import http from '../../util/node-http.js';
import https from 'node:https';
import { readFile } from 'node:fs/promises';
import { S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';

export interface S3Settings {
  bucket: string;
  /** Prepended to every key ('' or ending in '/'). */
  prefix: string;
  /** null: AWS's endpoint for the region. */
  endpoint: string | null;
  region: string;
  forcePathStyle: boolean;
  accessKeyId: string | null;
  secretAccessKey: string | null;
  accessKeyIdFile: string | null;
  secretAccessKeyFile: string | null;
  /** Server-side encryption asked for every object written; null: the bucket's default. */
  sse: null | 'AES256' | 'aws:kms';
  sseKmsKeyId: string | null;
  /** Blob GETs answered with a 307 to a presigned URL of the object (clients that follow redirects fetch from S3). */
  redirect: boolean;
  /** How long a presigned URL is valid. */
  redirectTTL: number;
  /** Bytes per part of a multipart upload (S3: at least 5 MiB, except the last). */
  partSize: number;
  /** Blobs of at least this many bytes are read by parallel ranged GETs (ranged-reader.ts); null: never. */
  readThreshold: number | null;
  /** Bytes per ranged GET of such a read. */
  readPartSize: number;
  /** Ranged GETs in flight at once per read; 'auto' (as when absent): 1 where parts are received into pooled memory, else 4 (s3-backend.ts). */
  readConcurrency?: number | 'auto';
  /** Bytes that parts read ahead may hold in memory, all reads of the process together. */
  readMemory: number;
  /** Parts of parallel reads from an http:// endpoint received into pooled memory (pooled-get.ts), as when absent; false: the SDK's client. */
  pooledReads?: boolean;
}

/** Connections to S3 at most (reads of warm blobs each hold one while they stream). */
const MAX_SOCKETS = 512;

/** `agents`: the connection pools to use (tests look at their sockets); default: new ones. */
export function createS3Client(s: S3Settings, agents: { http?: HttpAgent; https?: https.Agent } = {}): S3Client {
  const config: S3ClientConfig = {
    region: s.region,
    forcePathStyle: s.forcePathStyle,
    // Checksums only where S3 requires them: streamed part bodies then need no aws-chunked
    // trailer (which S3-compatible servers such as Ceph RGW 16 do not all accept). Blobs are
    // verified by their digest anyway.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts: 3,
    requestHandler: {
      connectionTimeout: 5_000,
      // A socket on which nothing moves for this long is given up (a stalled gateway).
      requestTimeout: 60_000,
      httpAgent: agents.http ?? new http.Agent({ keepAlive: true, maxSockets: MAX_SOCKETS }),
      httpsAgent: agents.https ?? new https.Agent({ keepAlive: true, maxSockets: MAX_SOCKETS }),
    },
  };
  if (s.endpoint) config.endpoint = s.endpoint;
  if (s.accessKeyId && s.secretAccessKey) {
    config.credentials = { accessKeyId: s.accessKeyId, secretAccessKey: s.secretAccessKey };
  } else if (s.accessKeyIdFile && s.secretAccessKeyFile) {
    const idFile = s.accessKeyIdFile;
    const secretFile = s.secretAccessKeyFile;
    config.credentials = async (): Promise<{ accessKeyId: string; secretAccessKey: string; expiration: Date }> => ({
      accessKeyId: (await readFile(idFile, 'utf8')).trim(),
      secretAccessKey: (await readFile(secretFile, 'utf8')).trim(),
      // The SDK asks again 5 min before an identity expires: so, about a minute from now.
      expiration: new Date(Date.now() + 6 * 60_000),
    });
  }
  return new S3Client(config);
}

/** The HTTP status of an SDK error, if it came from S3. */
export function s3Status(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode;
}

/** Whether an SDK error says the key (or the upload) does not exist. */
export function isNotFound(err: unknown): boolean {
  const name = (err as { name?: string } | null)?.name;
  return name === 'NoSuchKey' || name === 'NotFound' || name === 'NoSuchUpload' || s3Status(err) === 404;
}

/** A short, secret-free description of an S3 failure for logs and error answers. */
export function describeS3Error(err: unknown): string {
  const e = err as { name?: string; message?: string } | null;
  const status = s3Status(err);
  return `${e?.name ?? 'Error'}${status ? ` (HTTP ${status})` : ''}: ${e?.message ?? String(err)}`;
}
