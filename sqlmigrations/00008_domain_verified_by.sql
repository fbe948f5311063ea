-- +goose Up
-- Who keeps a domain verified: 'dns' when its last DNS check passed (DKIM
-- and SPF), 'operator' when an operator marked it verified (smtpcreds domains
-- set-verified, domains add --verified). An operator's mark stands until the
-- operator withdraws it: later DNS checks store and report their results but
-- do not unverify the domain. NULL while the domain is not verified.
ALTER TABLE domains ADD COLUMN verified_by text CHECK (verified_by IN ('dns', 'operator'));
-- Verified domains whose last check did not pass were marked by an operator.
UPDATE domains SET verified_by = CASE WHEN checked_at IS NOT NULL AND dkim_verified AND spf_verified THEN 'dns' ELSE 'operator' END
WHERE is_verified;

-- +goose Down
ALTER TABLE domains DROP COLUMN verified_by;
