-- +goose Up
-- When an attempt to apply the job first failed (NULL while none has): the
-- retry delay of a scope grows with how long its oldest pending job has been
-- failing, not with how many attempts failed, since every request whose own
-- apply fails is an attempt too and a busy API would otherwise push its own
-- recovery away.
ALTER TABLE sync_jobs ADD COLUMN first_failed_at timestamptz;

-- +goose Down
ALTER TABLE sync_jobs DROP COLUMN first_failed_at;
