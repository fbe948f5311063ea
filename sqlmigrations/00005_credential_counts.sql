-- +goose Up
-- How many credentials each domain has, by ranges of ids, on two levels:
-- level 0 counts ranges of 1024 ids ("buckets"), level 1 ranges of 65536
-- ids (64 buckets). The total sums the level-1 rows; the start of a page is
-- found by summing level-1 rows, then the at most 64 buckets of the range
-- that holds it, then skipping fewer than 1024 credentials. Listing the last
-- page of a million credentials so costs about what the first does.
--
-- Triggers write delta rows per statement; inserts never update a shared
-- row, so concurrent creates in one domain do not queue on it. A background
-- task folds the deltas of a range into one row.
CREATE TABLE credential_counts (
    domain_id bigint   NOT NULL,
    level     smallint NOT NULL, -- 0: bucket = id >> 10; 1: bucket = id >> 16
    bucket    bigint   NOT NULL,
    n         bigint   NOT NULL
);
CREATE INDEX credential_counts_idx ON credential_counts (domain_id, level, bucket) INCLUDE (n);

-- +goose StatementBegin
CREATE FUNCTION credential_counts_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO credential_counts (domain_id, level, bucket, n)
    SELECT domain_id, 0, id >> 10, count(*) FROM credential_counts_new GROUP BY 1, 3
    UNION ALL
    SELECT domain_id, 1, id >> 16, count(*) FROM credential_counts_new GROUP BY 1, 3;
    RETURN NULL;
END $$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION credential_counts_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO credential_counts (domain_id, level, bucket, n)
    SELECT domain_id, 0, id >> 10, -count(*) FROM credential_counts_old GROUP BY 1, 3
    UNION ALL
    SELECT domain_id, 1, id >> 16, -count(*) FROM credential_counts_old GROUP BY 1, 3;
    RETURN NULL;
END $$;
-- +goose StatementEnd

CREATE TRIGGER credentials_count_insert AFTER INSERT ON credentials
    REFERENCING NEW TABLE AS credential_counts_new
    FOR EACH STATEMENT EXECUTE FUNCTION credential_counts_insert();
CREATE TRIGGER credentials_count_delete AFTER DELETE ON credentials
    REFERENCING OLD TABLE AS credential_counts_old
    FOR EACH STATEMENT EXECUTE FUNCTION credential_counts_delete();

INSERT INTO credential_counts (domain_id, level, bucket, n)
SELECT domain_id, 0, id >> 10, count(*) FROM credentials GROUP BY 1, 3
UNION ALL
SELECT domain_id, 1, id >> 16, count(*) FROM credentials GROUP BY 1, 3;

-- +goose Down
DROP TRIGGER credentials_count_delete ON credentials;
DROP TRIGGER credentials_count_insert ON credentials;
DROP FUNCTION credential_counts_delete();
DROP FUNCTION credential_counts_insert();
DROP TABLE credential_counts;
