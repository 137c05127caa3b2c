-- Entries of other namespaces, so that the cache runs on a database of some size.
INSERT INTO cache(namespace, key, value, expires) VALUES ('warm', :uuid, :blob, :now + 86400);
