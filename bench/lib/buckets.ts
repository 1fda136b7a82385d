/** Buckets of the RADOS gateway scenarios 11 and 12 run on. */
import { AbortMultipartUploadCommand, DeleteBucketCommand, DeleteObjectsCommand, ListMultipartUploadsCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';

/** Every key of `bucket` with its size (ListObjectsV2, page after page). */
export async function listBucket(s3: S3Client, bucket: string): Promise<Array<{ key: string; size: number }>> {
  const out: Array<{ key: string; size: number }> = [];
  let token: string | undefined;
  do {
    const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, ContinuationToken: token }));
    for (const o of page.Contents ?? []) out.push({ key: o.Key ?? '', size: o.Size ?? 0 });
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return out;
}

/** Every object and unfinished multipart upload of `bucket` removed, then the bucket (the OSD keeps objects in RAM). */
export async function emptyAndDeleteBucket(s3: S3Client, bucket: string): Promise<void> {
  for (;;) {
    const keys = (await listBucket(s3, bucket)).map((o) => ({ Key: o.key }));
    if (keys.length === 0) break;
    for (let i = 0; i < keys.length; i += 1000) await s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys.slice(i, i + 1000), Quiet: true } }));
  }
  const ups = await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
  for (const u of ups.Uploads ?? []) await s3.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: u.Key, UploadId: u.UploadId }));
  await s3.send(new DeleteBucketCommand({ Bucket: bucket }));
}
