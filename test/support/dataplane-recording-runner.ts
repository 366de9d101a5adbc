/**
 * A CommandRunner that runs every command through another one (a test's network namespace) and
 * remembers each argv and stdin, in order, so a test can say exactly what the code under test ran:
 * "nothing was written", "only these chains were declared", "no set in use was flushed".
 */
import path from 'node:path';
import type { CommandRunner, ExecOptions, ExecResult, FollowedProgram } from '../../lib/exec.js';

export interface RecordedCommand {
  readonly argv: readonly string[];
  /** What was written to the program's stdin, if anything. */
  readonly input: string | undefined;
}

export class RecordingRunner implements CommandRunner {
  readonly commands: RecordedCommand[] = [];
  private readonly inner: CommandRunner;

  constructor(inner: CommandRunner) {
    this.inner = inner;
  }

  exec(argv: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
    // Recorded before it runs, so a command that fails or times out is still on the list.
    this.commands.push({ argv: [...argv], input: options.input });
    return this.inner.exec(argv, options);
  }

  follow(argv: readonly string[], onLine: (line: string) => void): FollowedProgram {
    this.commands.push({ argv: [...argv], input: undefined });
    return this.inner.follow(argv, onLine);
  }

  describe(): string {
    return this.inner.describe();
  }

  /** Forgets everything recorded so far. */
  clear(): void {
    this.commands.length = 0;
  }

  /** The commands that may change the kernel (everything but reads), in order. */
  writes(): RecordedCommand[] {
    return this.commands.filter((command) => !isReadOnly(command));
  }

  /** The stdin of every `iptables-*-restore` (tool 'iptables') or `ipset restore` (tool 'ipset') run. */
  restoreInputs(tool: 'iptables' | 'ipset'): string[] {
    return this.commands
      .filter((command) => (tool === 'iptables' ? isIptablesRestore(command) : isIpsetRestore(command)))
      .map((command) => command.input ?? '');
  }
}

export function programName(command: RecordedCommand): string {
  return path.basename(command.argv[0] ?? '');
}

export function isIptablesRestore(command: RecordedCommand): boolean {
  return /^iptables(-(nft|legacy))?-restore$/.test(programName(command));
}

export function isIpsetRestore(command: RecordedCommand): boolean {
  return programName(command) === 'ipset' && command.argv[1] === 'restore';
}

const READ_ONLY_IPSET_VERBS = new Set(['save', 'list', 'test', 'version', '-v', '--version']);

/** Conservative: anything not known to be a read counts as a write. */
function isReadOnly(command: RecordedCommand): boolean {
  const program = programName(command);
  if (/^iptables(-(nft|legacy))?-save$/.test(program)) return true;
  if (/^iptables(-(nft|legacy))?$/.test(program) && command.argv.slice(1).every((arg) => arg === '--version')) return true;
  if (isIptablesRestore(command) && command.argv.includes('--test')) return true;
  if (program === 'ipset') return READ_ONLY_IPSET_VERBS.has(command.argv[1] ?? '');
  // The daemon reads the node's links, addresses and routes, and follows their changes.
  if (program === 'ip') return command.argv.includes('show') || command.argv.includes('monitor');
  return false;
}
