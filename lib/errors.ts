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
