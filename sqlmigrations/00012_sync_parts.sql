-- +goose Up
-- What a target that renders files (passwd-file) last wrote to each part
-- (file) of a scope: an opaque fingerprint the target defines (for the
-- passwd-file: the file's inode, size, mtime, line count and a checksum of
-- its lines), written in the transaction of the apply that wrote the file.
-- A process (another one, or this one after a restart) trusts a file whose
-- fingerprint still matches it without reading it, and reads whole only the
-- scopes whose files are in doubt. A part without a row has no file.
CREATE TABLE sync_parts (
    target      text NOT NULL,
    scope       text NOT NULL,
    part        text NOT NULL,
    fingerprint text NOT NULL,
    PRIMARY KEY (target, scope, part)
);

-- The token of the apply that last left the scope's sync_parts true. The
-- parts are trusted only while it is the token of the scope's last
-- committed apply: an apply of a target that keeps no fingerprints, or a
-- change of the token behind the syncer's back (what a bulk import does to
-- make the scope read whole), makes every part of the scope in doubt.
ALTER TABLE sync_scopes ADD COLUMN parts_token bigint;

-- A scope's whole read streams its credentials in login order (bytewise,
-- as the passwd-file sorts them): within a domain that is the order of
-- username || '@', which this index gives without a sort, so that a whole
-- rewrite of a domain of any size costs the server constant memory.
CREATE INDEX credentials_domain_login_idx ON credentials (domain_id, ((username || '@') COLLATE "C"));

-- +goose Down
DROP INDEX credentials_domain_login_idx;
ALTER TABLE sync_scopes DROP COLUMN parts_token;
DROP TABLE sync_parts;
