import { PalisadeError } from '../errors.js';
import { formatArgv } from '../exec.js';
import type { CommandRunner } from '../exec.js';
import { DEFAULT_RETRY, withRetry } from '../retry.js';
import type { RetryPolicy } from '../retry.js';
import { POLICY_TABLE } from '../../rules/dataplane.js';
import { parseSavedTable } from './saved-table.js';
import type { SavedTable } from './saved-table.js';

/**
 * The iptables driver: whole-table reads with iptables-save and atomic writes with one
 * iptables-restore --noflush per change, always waiting for the xtables lock. Written by hand because
 * no maintained Node library drives iptables-restore; this is the one part Felix and kube-proxy also
 * write themselves.
 */

export type Backend = 'legacy' | 'nft';
export const BACKENDS: readonly Backend[] = ['legacy', 'nft'];

/** Seconds iptables-restore waits for the xtables lock before giving up (then we back off and retry). */
const LOCK_WAIT_SECONDS = '5';
/** Lines shown around the line iptables-restore rejected: enough to see the rule, not the whole input. */
const CONTEXT_LINES = 2;

export class IptablesError extends PalisadeError {
  readonly argv: readonly string[];
  readonly exitCode: number;
  readonly stderr: string;

  constructor(code: 'IPTABLES_RESTORE_FAILED' | 'IPTABLES_SAVE_FAILED', argv: readonly string[], where: string, exitCode: number, stderr: string, context: string) {
    super(code, `${formatArgv(argv)} (${where}) failed with exit code ${exitCode}: ${stderr.trim() || '(no stderr)'}${context}`);
    this.name = 'IptablesError';
    this.argv = argv;
    this.exitCode = exitCode;
    this.stderr = stderr;
  }
}

/**
 * A held xtables lock is the passing failure worth retrying. Matched by its message, not by exit code
 * 4: iptables-nft-restore exits 4 for rules the kernel rejects for good, too.
 */
export function isTransientIptablesFailure(error: unknown): boolean {
  return error instanceof IptablesError && /xtables lock|resource temporarily unavailable/i.test(error.stderr);
}

/** The lines around the one iptables-restore names in its error, numbered as it numbers them. */
export function failureContext(input: string, stderr: string): string {
  const match = /line:?\s*(\d+)/i.exec(stderr);
  if (match === null) return '';
  const failing = Number(match[1]);
  const lines = input.split('\n');
  const from = Math.max(1, failing - CONTEXT_LINES);
  const to = Math.min(lines.length, failing + CONTEXT_LINES);
  const shown: string[] = [];
  for (let n = from; n <= to; n++) shown.push(`${n === failing ? '>' : ' '} ${n}: ${lines[n - 1] ?? ''}`);
  return `\n${shown.join('\n')}`;
}

export interface IptablesOptions {
  readonly runner: CommandRunner;
  readonly backend: Backend;
  readonly retry?: RetryPolicy;
}

export class Iptables {
  readonly backend: Backend;
  private readonly runner: CommandRunner;
  private readonly retry: RetryPolicy;

  constructor(options: IptablesOptions) {
    this.runner = options.runner;
    this.backend = options.backend;
    this.retry = options.retry ?? DEFAULT_RETRY;
  }

  binary(tool: 'save' | 'restore'): string {
    return `iptables-${this.backend}-${tool}`;
  }

  /** Reads one table, palisade's unless another is named (with packet and byte counters when asked). */
  async save(options: { counters?: boolean; table?: string } = {}): Promise<SavedTable> {
    const table = options.table ?? POLICY_TABLE;
    const argv = [this.binary('save'), '-t', table, ...(options.counters === true ? ['-c'] : [])];
    const text = await withRetry(this.retry, isTransientIptablesFailure, async () => {
      const result = await this.runner.exec(argv);
      if (result.code !== 0) throw new IptablesError('IPTABLES_SAVE_FAILED', argv, this.runner.describe(), result.code, result.stderr, '');
      return result.stdout;
    });
    return parseSavedTable(text, table);
  }

  /** Applies restore text atomically without flushing anything it does not name; `test` only checks it. */
  async restore(text: string, options: { test?: boolean } = {}): Promise<void> {
    const argv = [this.binary('restore'), '--noflush', '-w', LOCK_WAIT_SECONDS, ...(options.test === true ? ['--test'] : [])];
    await withRetry(this.retry, isTransientIptablesFailure, async () => {
      const result = await this.runner.exec(argv, { input: text });
      if (result.code !== 0) throw new IptablesError('IPTABLES_RESTORE_FAILED', argv, this.runner.describe(), result.code, result.stderr, failureContext(text, result.stderr));
    });
  }
}
