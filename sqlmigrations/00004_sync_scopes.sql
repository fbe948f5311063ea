-- +goose Up
-- One row per (target, scope) that has been applied. An apply locks its row
-- for the length of its transaction (serialising the applies of a scope
-- across processes) and stamps it with a fresh random token, keeping the
-- previous one: a process whose last token is the previous one knows the
-- backend still holds what it wrote there itself, so it need not read the
-- whole scope again.
CREATE TABLE sync_scopes (
    target     text   NOT NULL,
    scope      text   NOT NULL,
    token      bigint NOT NULL,
    prev_token bigint,
    PRIMARY KEY (target, scope)
);

-- +goose Down
DROP TABLE sync_scopes;
