// The credential lifecycle, create → list → get → reset-password → delete →
// get (404), through the typed client against a running smtpcreds server.
//
// Environment: SMTPCREDS_URL (e.g. http://127.0.0.1:8080), SMTPCREDS_ACCOUNT,
// SMTPCREDS_TOKEN and SMTPCREDS_DOMAIN, a verified domain of that account.
// cmd/smtpcreds/ts_client_test.go (TestTypeScriptClient) sets them up and runs
// this file; by hand: `npm test` in clients/typescript with them exported.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { test } from "node:test";

import {
  createSmtpcredsClient,
  basicAuthorization,
  type Credential,
  type SmtpcredsClient,
} from "../src/index.js";

const passwordRE = /^[0-9A-Za-z]{32}$/;
const uuidRE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function env(name: string): string {
  const v = process.env[name];
  if (!v) {
    throw new Error(`${name} is not set: this test needs a running smtpcreds server`);
  }
  return v;
}

/** Fails if a parsed body has a key that could hold a password or its hash. */
function assertNoPasswordKey(what: string, body: unknown): void {
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) {
      v.forEach(walk);
    } else if (v !== null && typeof v === "object") {
      for (const [k, x] of Object.entries(v)) {
        assert.ok(
          k !== "password" && k !== "new_password" && !k.includes("hash"),
          `${what}: body has key ${JSON.stringify(k)}: ${JSON.stringify(body)}`,
        );
        walk(x);
      }
    }
  };
  walk(body);
}

function assertRateLimitHeaders(what: string, res: Response): void {
  const limit = Number(res.headers.get("X-RateLimit-Limit"));
  const remaining = Number(res.headers.get("X-RateLimit-Remaining"));
  assert.ok(Number.isInteger(limit) && limit > 0, `${what}: X-RateLimit-Limit = ${res.headers.get("X-RateLimit-Limit")}`);
  assert.ok(
    Number.isInteger(remaining) && remaining >= 0 && remaining < limit,
    `${what}: X-RateLimit-Remaining = ${res.headers.get("X-RateLimit-Remaining")}`,
  );
}

function assertCredential(what: string, c: Credential, username: string, domain: string, reset: boolean): void {
  const now = Math.floor(Date.now() / 1000);
  assert.ok(Number.isInteger(c.id) && c.id > 0, `${what}: id = ${c.id}`);
  assert.match(c.user_smtp_guid, uuidRE, `${what}: user_smtp_guid`);
  assert.equal(c.username, username, `${what}: username`);
  assert.equal(c.login, `${username}@${domain}`, `${what}: login`);
  assert.ok(Math.abs(c.created_at - now) < 600, `${what}: created_at = ${c.created_at}, want Unix seconds near ${now}`);
  assert.ok(c.modified_at >= c.created_at, `${what}: modified_at ${c.modified_at} before created_at ${c.created_at}`);
  assert.equal(c.status, true, `${what}: status`);
  assert.equal(c.is_deleted, false, `${what}: is_deleted`);
  assert.equal(c.deleted_at, null, `${what}: deleted_at`);
  assert.equal(typeof c.remote_synced, "boolean", `${what}: remote_synced`);
  assert.equal(c.is_verified, c.remote_synced, `${what}: is_verified is remote_synced`);
  if (reset) {
    assert.ok(
      c.last_password_changed !== null && c.last_password_changed >= c.created_at,
      `${what}: last_password_changed = ${c.last_password_changed}, want the reset time`,
    );
  } else {
    assert.equal(c.last_password_changed, null, `${what}: last_password_changed before any reset`);
  }
}

test("credential lifecycle through the typed client", async (t) => {
  const domain = env("SMTPCREDS_DOMAIN");
  const api = createSmtpcredsClient(env("SMTPCREDS_URL"), env("SMTPCREDS_ACCOUNT"), env("SMTPCREDS_TOKEN"));
  // Unique, so that the test can run again against the same server.
  const username = `ts-${randomBytes(6).toString("hex")}`;
  const domainPath = { params: { path: { domain } } } as const;
  let guid = "";
  let password = "";
  let newPassword = "";

  await t.test("create", async () => {
    const { data, error, response } = await api.POST("/api/domains/{domain}/credentials", {
      ...domainPath,
      body: { username },
    });
    assert.equal(response.status, 201, `create: body ${JSON.stringify(error ?? data)}`);
    assert.equal(error, undefined);
    assert.ok(data);
    assertRateLimitHeaders("create", response);
    assert.equal(response.headers.get("Cache-Control"), "no-store");
    assert.equal(data.success, true);
    assert.equal(data.message, "Credential created successfully.");
    assert.match(data.data.password, passwordRE);
    assert.equal(typeof data.data.remote_synced, "boolean");
    assert.equal(data.data.strength_info.length, 32);
    assert.equal(data.data.strength_info.alphabet_size, 62);
    assert.equal(data.data.strength_info.alphabet, "base62");
    assert.ok(Math.abs(data.data.strength_info.entropy_bits - 32 * Math.log2(62)) < 0.5);
    assert.ok(!("new_password" in data.data), "create: data has new_password");
    assertCredential("create", data.data.credential, username, domain, false);
    guid = data.data.credential.user_smtp_guid;
    password = data.data.password;
  });

  await t.test("list", async () => {
    const { data, error, response } = await api.GET("/api/domains/{domain}/credentials", {
      params: { path: { domain }, query: { limit: 100 } },
    });
    assert.equal(response.status, 200, `list: body ${JSON.stringify(error ?? data)}`);
    assert.ok(data);
    assertRateLimitHeaders("list", response);
    assert.equal(data.success, true);
    assert.equal(data.domain, domain);
    assert.ok(Array.isArray(data.data), "list: data is not a flat array");
    assertNoPasswordKey("list", data);
    assert.ok(!JSON.stringify(data).includes(password), "list: body contains the password");
    const mine = data.data.filter((c) => c.user_smtp_guid === guid);
    assert.equal(mine.length, 1, `list: the new credential ${guid} is not listed once`);
    assertCredential("list", mine[0]!, username, domain, false);
    const p = data.pagination;
    assert.ok(p.total >= 1 && p.page === 1 && p.limit === 100 && p.offset === 0 && p.last_page >= 1, JSON.stringify(p));
    assert.equal(data.data.length, Math.min(p.total, 100));
  });

  await t.test("get", async () => {
    const { data, error, response } = await api.GET("/api/domains/{domain}/credentials/{credential}", {
      params: { path: { domain, credential: guid } },
    });
    assert.equal(response.status, 200, `get: body ${JSON.stringify(error ?? data)}`);
    assert.ok(data);
    assertRateLimitHeaders("get", response);
    assert.equal(data.success, true);
    assertNoPasswordKey("get", data);
    assert.equal(data.data.user_smtp_guid, guid);
    assertCredential("get", data.data, username, domain, false);
  });

  await t.test("reset-password", async () => {
    const { data, error, response } = await api.PUT("/api/domains/{domain}/credentials/{credential}/reset-password", {
      params: { path: { domain, credential: guid } },
    });
    assert.equal(response.status, 200, `reset-password: body ${JSON.stringify(error ?? data)}`);
    assert.ok(data);
    assertRateLimitHeaders("reset-password", response);
    assert.equal(response.headers.get("Cache-Control"), "no-store");
    assert.equal(data.success, true);
    assert.equal(data.message, "Password reset successfully.");
    assert.match(data.data.new_password, passwordRE);
    assert.notEqual(data.data.new_password, password, "reset-password: the new password is the old one");
    assert.ok(!("password" in data.data), "reset-password: data has password");
    assert.equal(typeof data.data.remote_synced, "boolean");
    assert.equal(data.data.strength_info.length, 32);
    assert.equal(data.data.credential.user_smtp_guid, guid);
    assertCredential("reset-password", data.data.credential, username, domain, true);
    newPassword = data.data.new_password;

    const after = await api.GET("/api/domains/{domain}/credentials/{credential}", {
      params: { path: { domain, credential: guid } },
    });
    assert.equal(after.response.status, 200);
    assert.ok(after.data);
    assertNoPasswordKey("get after reset", after.data);
    assert.ok(!JSON.stringify(after.data).includes(newPassword), "get after reset: body contains the new password");
    assertCredential("get after reset", after.data.data, username, domain, true);
  });

  await t.test("delete", async () => {
    const { data, error, response } = await api.DELETE("/api/domains/{domain}/credentials/{credential}", {
      params: { path: { domain, credential: guid } },
    });
    assert.equal(response.status, 200, `delete: body ${JSON.stringify(error ?? data)}`);
    assert.ok(data);
    assertRateLimitHeaders("delete", response);
    assert.equal(typeof data.data.remote_synced, "boolean");
    assert.deepEqual(data, {
      success: true,
      message: "Credential deleted successfully.",
      data: { remote_synced: data.data.remote_synced },
    });
  });

  await t.test("get after delete is 404", async () => {
    const { data, error, response } = await api.GET("/api/domains/{domain}/credentials/{credential}", {
      params: { path: { domain, credential: guid } },
    });
    assert.equal(response.status, 404, `get after delete: body ${JSON.stringify(error ?? data)}`);
    assert.equal(data, undefined);
    assert.ok(error);
    assertRateLimitHeaders("get after delete", response);
    assert.equal(error.success, false);
    assert.equal(error.message, "Credential not found");
  });
});

test("a wrong token is a typed 401", async () => {
  const api = createSmtpcredsClient(env("SMTPCREDS_URL"), env("SMTPCREDS_ACCOUNT"), "smtpk_wrong");
  const { data, error, response } = await api.GET("/api/domains/{domain}/credentials", {
    params: { path: { domain: env("SMTPCREDS_DOMAIN") } },
  });
  assert.equal(response.status, 401);
  assert.equal(data, undefined);
  assert.ok(error);
  assert.equal(response.headers.get("WWW-Authenticate"), 'Basic realm="smtpcreds"');
  assert.deepEqual(error, { success: false, message: "Unauthorized", error: "Unauthorized" });
});

test("basicAuthorization", () => {
  assert.equal(basicAuthorization("acme", "smtpk_x"), `Basic ${Buffer.from("acme:smtpk_x").toString("base64")}`);
  assert.equal(basicAuthorization("é", "t"), `Basic ${Buffer.from("é:t", "utf8").toString("base64")}`);
  assert.throws(() => basicAuthorization("a:b", "t"), /cannot contain ':'/);
});

// Never called: compiled only, so that `tsc` fails when the generated types
// stop describing the API the way this client's users rely on.
export function typeChecks(api: SmtpcredsClient): void {
  const path = { domain: "example.com", credential: "0b6f3a4e-2f4c-4c5e-9f57-6a1f2e9d3c11" };
  // @ts-expect-error: the credential path parameter is required.
  void api.GET("/api/domains/{domain}/credentials/{credential}", { params: { path: { domain: "example.com" } } });
  // @ts-expect-error: no such route.
  void api.GET("/api/credentials");
  // @ts-expect-error: reset-password is a PUT.
  void api.POST("/api/domains/{domain}/credentials/{credential}/reset-password", { params: { path } });
  // @ts-expect-error: the username is a string.
  void api.POST("/api/domains/{domain}/credentials", { params: { path }, body: { username: 1 } });
  void (async () => {
    const got = await api.GET("/api/domains/{domain}/credentials/{credential}", { params: { path } });
    if (got.data) {
      // @ts-expect-error: a credential read back has no password.
      void got.data.data.password;
      const synced: boolean = got.data.data.remote_synced;
      void synced;
    }
    const created = await api.POST("/api/domains/{domain}/credentials", { params: { path }, body: {} });
    if (created.data) {
      const pw: string = created.data.data.password;
      void pw;
    }
  })();
}
