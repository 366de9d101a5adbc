import { PalisadeError } from './errors.js';
import { formatArgv } from './exec.js';
import type { CommandRunner } from './exec.js';
import { DEFAULT_RETRY, withRetry } from './retry.js';
import type { RetryPolicy } from './retry.js';
import { failureContext } from './iptables/iptables.js';

/** The ipset driver: reads with `ipset save`, writes with `ipset restore`, both through a CommandRunner. */

export interface LiveSet {
  readonly type: string;
  readonly members: ReadonlySet<string>;
}

export class IpsetError extends PalisadeError {
  readonly argv: readonly string[];
  readonly exitCode: number;
  readonly stderr: string;

  constructor(code: 'IPSET_RESTORE_FAILED' | 'IPSET_SAVE_FAILED' | 'IPSET_SAVE_MALFORMED', argv: readonly string[], where: string, exitCode: number, stderr: string, context: string) {
    super(code, `${formatArgv(argv)} (${where}) failed with exit code ${exitCode}: ${stderr.trim() || '(no stderr)'}${context}`);
    this.name = 'IpsetError';
    this.argv = argv;
    this.exitCode = exitCode;
    this.stderr = stderr;
  }
}

/** `ipset save` prints a /32 in a hash:net set as a bare address; compare members in that form. */
export function canonicalMember(type: string, member: string): string {
  return type === 'hash:net' ? member.replace(/\/32(?=$| )/, '') : member;
}

function isTransient(error: unknown): boolean {
  return error instanceof IpsetError && /resource temporarily unavailable|try again/i.test(error.stderr);
}

export class Ipset {
  private readonly runner: CommandRunner;
  private readonly retry: RetryPolicy;

  constructor(options: { runner: CommandRunner; retry?: RetryPolicy }) {
    this.runner = options.runner;
    this.retry = options.retry ?? DEFAULT_RETRY;
  }

  /** Every set whose name `owns` accepts, with its members in canonical form. */
  async save(owns: (name: string) => boolean): Promise<Map<string, LiveSet>> {
    const argv = ['ipset', 'save'];
    const result = await withRetry(this.retry, isTransient, async () => {
      const r = await this.runner.exec(argv, { timeoutMs: 60_000 });
      if (r.code !== 0) throw new IpsetError('IPSET_SAVE_FAILED', argv, this.runner.describe(), r.code, r.stderr, '');
      return r;
    });
    const sets = new Map<string, { type: string; members: Set<string> }>();
    for (const line of result.stdout.split('\n')) {
      if (line === '') continue;
      const [verb, name = '', ...rest] = line.split(' ');
      if (verb === 'create') {
        if (owns(name)) sets.set(name, { type: rest[0] ?? '', members: new Set() });
      } else if (verb === 'add') {
        const set = sets.get(name);
        if (set !== undefined) set.members.add(canonicalMember(set.type, rest.join(' ')));
      } else {
        throw new IpsetError('IPSET_SAVE_MALFORMED', argv, this.runner.describe(), 0, `unexpected line: ${line}`, '');
      }
    }
    return sets;
  }

  /**
   * Each set's type and entry count, from `ipset list -t`: a few milliseconds where reading every
   * member of tens of thousands takes a hundred. Enough to notice a set that vanished or was emptied.
   */
  async summary(owns: (name: string) => boolean): Promise<Map<string, { type: string; entries: number }>> {
    const argv = ['ipset', 'list', '-t'];
    const result = await withRetry(this.retry, isTransient, async () => {
      const r = await this.runner.exec(argv);
      if (r.code !== 0) throw new IpsetError('IPSET_SAVE_FAILED', argv, this.runner.describe(), r.code, r.stderr, '');
      return r;
    });
    const sets = new Map<string, { type: string; entries: number }>();
    let name: string | null = null;
    let type = '';
    for (const line of result.stdout.split('\n')) {
      const [key, ...rest] = line.split(': ');
      const value = rest.join(': ');
      if (key === 'Name') {
        name = value;
        type = '';
      } else if (key === 'Type') type = value;
      else if (key === 'Number of entries' && name !== null && owns(name)) sets.set(name, { type, entries: Number(value) });
    }
    return sets;
  }

  async restore(text: string): Promise<void> {
    if (text === '') return;
    const argv = ['ipset', 'restore'];
    await withRetry(this.retry, isTransient, async () => {
      const result = await this.runner.exec(argv, { input: text, timeoutMs: 60_000 });
      if (result.code !== 0) throw new IpsetError('IPSET_RESTORE_FAILED', argv, this.runner.describe(), result.code, result.stderr, failureContext(text, result.stderr));
    });
  }

  /** Destroys one set; a set the kernel still uses is left for later and reported as 'in-use'. */
  async destroy(name: string): Promise<'destroyed' | 'absent' | 'in-use'> {
    const argv = ['ipset', 'destroy', name];
    const result = await this.runner.exec(argv);
    if (result.code === 0) return 'destroyed';
    if (/does not exist/i.test(result.stderr)) return 'absent';
    if (/in use/i.test(result.stderr)) return 'in-use';
    throw new IpsetError('IPSET_RESTORE_FAILED', argv, this.runner.describe(), result.code, result.stderr, '');
  }
}
