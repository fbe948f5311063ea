// Typed bindings for the smtpcreds HTTP API.
//
// The types come from schema.d.ts, which scripts/gen-ts.sh generates from
// openapi.yaml with openapi-typescript: edit the spec, never schema.d.ts.
// The requests are made by openapi-fetch, which checks paths, parameters,
// bodies and responses against those types.
import createClient, { mergeHeaders, type Client, type ClientOptions } from "openapi-fetch";

import type { components, operations, paths } from "./schema.js";

export type { components, operations, paths };

/** A client for the smtpcreds API, typed by openapi.yaml. */
export type SmtpcredsClient = Client<paths, "application/json">;

type Schemas = components["schemas"];
/** An SMTP credential, as every route returns it (never with its password). */
export type Credential = Schemas["Credential"];
/** The body of a 201 from createCredential: the credential and its password. */
export type CredentialCreated = Schemas["CredentialCreated"];
/** The body of a 200 from resetCredentialPassword: the credential and its new password. */
export type PasswordReset = Schemas["PasswordReset"];
/** One page of a domain's credentials, from listCredentials. */
export type CredentialPage = Schemas["CredentialPage"];
/** The body of every error response but 422. */
export type ErrorResponse = Schemas["ErrorResponse"];
/** The body of a 422. */
export type ValidationErrorResponse = Schemas["ValidationErrorResponse"];

/** Options passed on to openapi-fetch's createClient, but for baseUrl. */
export type SmtpcredsClientOptions = Omit<ClientOptions, "baseUrl">;

/** The value of an Authorization header for HTTP Basic auth (RFC 7617, UTF-8). */
export function basicAuthorization(account: string, token: string): string {
  if (account.includes(":")) {
    throw new Error("smtpcreds: an account name cannot contain ':' in HTTP Basic auth");
  }
  const bytes = new TextEncoder().encode(`${account}:${token}`);
  let binary = "";
  for (const b of bytes) {
    binary += String.fromCharCode(b);
  }
  return `Basic ${btoa(binary)}`;
}

/**
 * Returns a client for the smtpcreds API at baseUrl (e.g. "http://127.0.0.1:8080";
 * the paths in openapi.yaml already start with /api) that authenticates every
 * request as account with its API token (`smtpk_...`) and sends JSON.
 *
 *     const api = createSmtpcredsClient(url, "acme", token);
 *     const { data, error, response } = await api.POST("/api/domains/{domain}/credentials", {
 *       params: { path: { domain: "example.com" } },
 *       body: { username: "myuser" },
 *     });
 *
 * Every call resolves (it rejects only when the request could not be made):
 * `data` is the typed body of a 2xx, `error` the typed body of any other status,
 * and `response.status` tells which.
 *
 * options go to openapi-fetch's createClient (a custom fetch, extra headers,
 * ...). Content-Type is application/json on every request; to send a FormData
 * body instead, pass `headers: { "Content-Type": null }` with that request.
 */
export function createSmtpcredsClient(
  baseUrl: string,
  account: string,
  token: string,
  options: SmtpcredsClientOptions = {},
): SmtpcredsClient {
  const { headers, ...rest } = options;
  // Later ones win; a header set to null in options.headers is not sent.
  const merged = mergeHeaders(
    { "Content-Type": "application/json", Accept: "application/json" },
    headers,
    { Authorization: basicAuthorization(account, token) },
  );
  return createClient<paths, "application/json">({
    ...rest,
    baseUrl: baseUrl.replace(/\/+$/, ""),
    headers: merged,
  });
}
