/**
 * Bearer tokens for the API client, kept fresh. A source hands out its current token, and is told when
 * the server refused one: it then fetches afresh, unless it has moved on since. That check matters
 * because the four watches reconnect together: after a rotation all four may be refused with the same
 * old token, and the first refusal already fetched the new one, which the other three must not throw
 * away (client-go's exec authenticator makes the same check).
 */
export interface TokenSource {
  /** Where the token comes from, for messages: "the token file /var/run/…/token". */
  readonly description: string;
  token(): Promise<string | null>;
  /** The server answered 401 to a request that carried `refused`. */
  invalidate(refused: string | null): void;
}

export const NO_TOKEN: TokenSource = { description: 'no bearer token', token: async () => null, invalidate: () => {} };

export function staticToken(token: string, description: string): TokenSource {
  return { description, token: async () => token, invalidate: () => {} };
}

export interface FetchedToken {
  readonly token: string;
  /** When to fetch again (on the source's clock, in ms), refused or not. */
  readonly refreshAt: number;
}

/**
 * A token fetched by `fetch` and kept until its refresh time or its refusal. However many requests ask
 * at once, it is fetched once: a rotation costs one file read or one plugin run, not one per watch.
 * A failed fetch is not remembered: the next request tries again, and the caller's backoff paces it.
 */
export function cachedToken(description: string, fetch: () => Promise<FetchedToken>, now: () => number): TokenSource {
  let cached: FetchedToken | null = null;
  let pending: Promise<string> | null = null;
  return {
    description,
    token() {
      if (cached !== null && now() < cached.refreshAt) return Promise.resolve(cached.token);
      pending ??= fetch().then((fetched) => {
        cached = fetched;
        return fetched.token;
      }).finally(() => {
        pending = null;
      });
      return pending;
    },
    invalidate(refused) {
      if (cached !== null && cached.token === refused) cached = null;
    },
  };
}
