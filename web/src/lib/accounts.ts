// The account endpoints (docs/api.md#accounts): sign-up, sign-in, who am I, API keys and
// the admin's users. The sign-in calls never trigger the sign-in prompt themselves.

import { apiJson, jsonBody } from "./api";
import type { AdminUser, ApiKey, AuthState, Me, NewApiKey, Role, User, UserChanges } from "./types";

const seg = encodeURIComponent;
const quiet = { signIn: false };

/** `GET /api/v1/auth/state` (open). */
export function authState(): Promise<AuthState> {
  return apiJson<AuthState>("/auth/state", {}, quiet);
}

/** `GET /api/v1/auth/me`; rejects with `StreamError("UNAUTHORIZED")` when not signed in. */
export function whoAmI(): Promise<Me> {
  return apiJson<Me>("/auth/me", {}, quiet);
}

/** `POST /api/v1/auth/signup` (201): signed in, unless `user.pending`. */
export async function signUp(username: string, password: string): Promise<User> {
  const body = await apiJson<{ user: User }>("/auth/signup", jsonBody("POST", { username, password }), quiet);
  return body.user;
}

/** `POST /api/v1/auth/login`: 401 wrong credentials, 403 disabled/pending, 429 throttled. */
export async function logIn(username: string, password: string): Promise<User> {
  const body = await apiJson<{ user: User }>("/auth/login", jsonBody("POST", { username, password }), quiet);
  return body.user;
}

/** `POST /api/v1/auth/logout` (204). */
export async function logOut(): Promise<void> {
  await apiJson<undefined>("/auth/logout", { method: "POST" }, quiet);
}

export async function listKeys(): Promise<ApiKey[]> {
  return (await apiJson<{ data: ApiKey[] }>("/auth/keys")).data;
}

export function createKey(name: string): Promise<NewApiKey> {
  return apiJson<NewApiKey>("/auth/keys", jsonBody("POST", { name }));
}

export async function revokeKey(id: string): Promise<void> {
  await apiJson<undefined>(`/auth/keys/${seg(id)}`, { method: "DELETE" });
}

export async function listUsers(): Promise<AdminUser[]> {
  return (await apiJson<{ data: AdminUser[] }>("/users")).data;
}

export async function addUser(username: string, password: string, role: Role): Promise<AdminUser> {
  return (await apiJson<{ user: AdminUser }>("/users", jsonBody("POST", { username, password, role }))).user;
}

export async function changeUser(id: string, changes: UserChanges): Promise<AdminUser> {
  return (await apiJson<{ user: AdminUser }>(`/users/${seg(id)}`, jsonBody("PATCH", changes))).user;
}
