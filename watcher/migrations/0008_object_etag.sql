-- A bucket's objects carry an ETag beside their size and Last-Modified time. It is a change hint
-- only (a multipart upload's ETag is no content hash): an object overwritten within the same
-- second with the same size still shows a new ETag, so it is read again; its sha256 decides.
ALTER TABLE ops.raw_ingest_manifest ADD COLUMN etag text;
