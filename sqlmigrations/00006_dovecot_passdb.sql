-- +goose Up
-- What a Dovecot passdb with the SQL driver reads (sync target dovecot-sql):
-- one row per active credential, the same logins and hashes the passwd-file
-- target writes. Dovecot's query looks a login up by its two parts, which
-- the unique domain name and the (domain_id, username) key answer with two
-- index probes:
--   SELECT password FROM dovecot_passdb WHERE username = '%Ln' AND domain = '%Ld'
-- Dovecot's database role needs SELECT on this view only (a view reads its
-- tables with its owner's rights), not on credentials, domains or anything
-- else.
CREATE VIEW dovecot_passdb AS
SELECT c.username || '@' || d.name AS login,
       c.username,
       d.name AS domain,
       c.password_hash AS password
FROM credentials c
JOIN domains d ON d.id = c.domain_id
WHERE c.status;

-- +goose Down
DROP VIEW dovecot_passdb;
