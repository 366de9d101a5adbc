/**
 * The lab API server's authentication: a set of bearer tokens, any of which is accepted, replaced as
 * a whole when tokens are issued or expire. Null accepts every request, as with authentication off.
 */
export class AcceptedTokens {
  private tokens: ReadonlySet<string> | null;

  constructor(tokens: readonly string[] | null) {
    this.tokens = tokens === null ? null : new Set(tokens);
  }

  replace(tokens: readonly string[] | null): void {
    this.tokens = tokens === null ? null : new Set(tokens);
  }

  accepts(token: string | null): boolean {
    return this.tokens === null || (token !== null && this.tokens.has(token));
  }

  /** The first accepted token, for a kubeconfig; null when there is none or every request is accepted. */
  first(): string | null {
    return this.tokens === null ? null : ([...this.tokens][0] ?? null);
  }
}

/** The token of an `Authorization: Bearer …` header (the scheme is case-insensitive); null otherwise. */
export function bearerToken(header: string | undefined): string | null {
  const match = /^Bearer +(\S+)\s*$/i.exec(header ?? '');
  return match?.[1] ?? null;
}
