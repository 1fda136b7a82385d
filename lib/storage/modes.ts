/**
 * The modes of everything stevedore creates in a store (and in the S3 backend's local working
 * space): its owner's only. The store holds every repository's content side by side, private
 * hosted blobs among them, so another local user of the host must read none of it, whatever the
 * umask. Given when a directory or file is created; an existing store keeps the modes it has (no
 * recursive chmod at start-up: `chmod -R go= <store>` once, if an older version made it).
 */
export const DIR_MODE = 0o700;
export const FILE_MODE = 0o600;
