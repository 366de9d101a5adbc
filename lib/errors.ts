/**
 * Every error palisade raises on purpose carries a stable `code` (for logs, metrics and tests to key on),
 * the context needed to act on it, and the underlying `cause`.
 */
export class PalisadeError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PalisadeError';
    this.code = code;
  }
}

/** An input file that cannot be read or parsed: names the file and, where known, the line. */
export class ManifestError extends PalisadeError {
  readonly file: string;
  readonly line: number | undefined;

  constructor(file: string, line: number | undefined, message: string, options?: { cause?: unknown }) {
    super('MANIFEST_INVALID', `${line === undefined ? file : `${file}:${line}`}: ${message}`, options);
    this.name = 'ManifestError';
    this.file = file;
    this.line = line;
  }
}

/** A command-line usage problem: a missing or malformed flag or argument. */
export class UsageError extends PalisadeError {
  constructor(message: string) {
    super('USAGE', message);
    this.name = 'UsageError';
  }
}

/** A kubeconfig or service-account setup that cannot be used: names the file and what is wrong in it. */
export class KubeConfigError extends PalisadeError {
  constructor(message: string, cause?: unknown) {
    super('KUBECONFIG_INVALID', message, cause === undefined ? undefined : { cause });
    this.name = 'KubeConfigError';
  }
}

/**
 * Credentials that could not be obtained while running: an unreadable or empty token file, an exec
 * plugin that failed or printed something unusable. Names the source; the request it was for fails
 * and is retried by its caller.
 */
export class CredentialsError extends PalisadeError {
  constructor(message: string, cause?: unknown) {
    super('KUBE_CREDENTIALS_UNAVAILABLE', message, cause === undefined ? undefined : { cause });
    this.name = 'CredentialsError';
  }
}
