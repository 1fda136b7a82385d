// The Ceph RADOS Gateway fixture (test/fixtures/ceph.ts) speaks S3 as the S3 backend will use it,
// through the AWS SDK v3: buckets, multipart uploads (and the empty-ETag quirk), ranged GETs,
// listing and aborting unfinished multipart uploads, and an outage when the gateway is killed.
import { createHash, randomBytes } from 'node:crypto';
import {
  AbortMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import t from 'tap';
import { startRgw } from '../fixtures/ceph.js';

t.test('a real RADOS gateway: multipart upload, HEAD for the ETag, ranged GET, unfinished uploads listed and aborted', async (t) => {
  const started = Date.now();
  const rgw = await startRgw(t);
  t.comment(`RGW up in ${Date.now() - started} ms at ${rgw.endpoint}`);
  t.match(rgw.endpoint, /^http:\/\/127\.0\.0\.1:\d+$/);
  const s3 = new S3Client({
    endpoint: rgw.endpoint,
    region: rgw.region,
    forcePathStyle: true,
    credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey },
  });
  t.teardown(() => s3.destroy());
  await s3.send(new CreateBucketCommand({ Bucket: 'blobs' }));

  const data = randomBytes(12 * 1024 * 1024);
  const digest = createHash('sha256').update(data).digest('hex');
  const up = new Upload({ client: s3, params: { Bucket: 'blobs', Key: `sha256/${digest}`, Body: data }, partSize: 5 * 1024 * 1024, queueSize: 2 });
  await up.done();
  const head = await s3.send(new HeadObjectCommand({ Bucket: 'blobs', Key: `sha256/${digest}` }));
  t.equal(head.ContentLength, data.length, 'HEAD gives the size');
  t.match(head.ETag, /^"[0-9a-f]{32}-3"$/, 'and the multipart ETag (three parts)');

  const ranged = await s3.send(new GetObjectCommand({ Bucket: 'blobs', Key: `sha256/${digest}`, Range: 'bytes=100-199' }));
  t.equal(ranged.ContentRange, `bytes 100-199/${data.length}`);
  t.ok(Buffer.from(await ranged.Body!.transformToByteArray()).equals(data.subarray(100, 200)), 'a ranged GET gives exactly those bytes');

  const listed = await s3.send(new ListObjectsV2Command({ Bucket: 'blobs', Prefix: 'sha256/' }));
  t.same(listed.Contents?.map((o) => [o.Key, o.Size]), [[`sha256/${digest}`, data.length]]);

  // An upload a crash left unfinished: listed, then aborted, and no object appeared.
  const orphan = await s3.send(new CreateMultipartUploadCommand({ Bucket: 'blobs', Key: 'sha256/orphan' }));
  await s3.send(new UploadPartCommand({ Bucket: 'blobs', Key: 'sha256/orphan', UploadId: orphan.UploadId, PartNumber: 1, Body: randomBytes(1024) }));
  const pending = await s3.send(new ListMultipartUploadsCommand({ Bucket: 'blobs' }));
  t.same(pending.Uploads?.map((u) => [u.Key, u.UploadId]), [['sha256/orphan', orphan.UploadId]]);
  await s3.send(new AbortMultipartUploadCommand({ Bucket: 'blobs', Key: 'sha256/orphan', UploadId: orphan.UploadId }));
  t.same((await s3.send(new ListMultipartUploadsCommand({ Bucket: 'blobs' }))).Uploads ?? [], []);
  const after = await s3.send(new ListObjectsV2Command({ Bucket: 'blobs', Prefix: 'sha256/' }));
  t.equal(after.KeyCount, 1, 'the aborted upload left no object');

  rgw.gateway.kill('SIGKILL');
  await new Promise((r) => rgw.gateway.once('exit', r));
  await t.rejects(s3.send(new HeadObjectCommand({ Bucket: 'blobs', Key: `sha256/${digest}` })), 'with the gateway gone, requests fail');
});
