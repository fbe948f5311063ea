-- +goose Up
-- How many credentials each domain has, by ranges of 1024 ids ("buckets"),
-- so that the total and the start of any page are found by summing about
-- count/1024 rows instead of counting or skipping every credential: listing
-- the last page of a million credentials costs about what the first does.
--
-- Triggers write one delta row per statement and bucket; inserts never
-- update a shared row, so concurrent creates in one domain do not queue on
-- it. A background task folds the deltas of a bucket into one row.
CREATE TABLE credential_counts (
    domain_id bigint NOT NULL,
    bucket    bigint NOT NULL, -- credentials.id >> 10
    n         bigint NOT NULL
);
CREATE INDEX credential_counts_domain_bucket_idx ON credential_counts (domain_id, bucket) INCLUDE (n);

-- +goose StatementBegin
CREATE FUNCTION credential_counts_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO credential_counts (domain_id, bucket, n)
    SELECT domain_id, id >> 10, count(*) FROM credential_counts_new GROUP BY 1, 2;
    RETURN NULL;
END $$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION credential_counts_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO credential_counts (domain_id, bucket, n)
    SELECT domain_id, id >> 10, -count(*) FROM credential_counts_old GROUP BY 1, 2;
    RETURN NULL;
END $$;
-- +goose StatementEnd

CREATE TRIGGER credentials_count_insert AFTER INSERT ON credentials
    REFERENCING NEW TABLE AS credential_counts_new
    FOR EACH STATEMENT EXECUTE FUNCTION credential_counts_insert();
CREATE TRIGGER credentials_count_delete AFTER DELETE ON credentials
    REFERENCING OLD TABLE AS credential_counts_old
    FOR EACH STATEMENT EXECUTE FUNCTION credential_counts_delete();

INSERT INTO credential_counts (domain_id, bucket, n)
SELECT domain_id, id >> 10, count(*) FROM credentials GROUP BY 1, 2;

-- +goose Down
DROP TRIGGER credentials_count_delete ON credentials;
DROP TRIGGER credentials_count_insert ON credentials;
DROP FUNCTION credential_counts_delete();
DROP FUNCTION credential_counts_insert();
DROP TABLE credential_counts;
