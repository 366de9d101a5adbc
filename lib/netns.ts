/**
 * Network namespaces for tests, end-to-end runs and demos: the one place that runs programs against a
 * kernel firewall. Everything it runs goes through `ip netns exec NAME`, so nothing here can touch the
 * firewall, routes or addresses of the machine's own namespace. Programs are spawned with argv arrays
 * (never a shell) and fed through stdin.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { PalisadeError } from './errors.js';
import { commandAvailable, followLines, formatArgv, spawnCollect } from './exec.js';
import type { CommandRunner, ExecOptions, ExecResult, FollowedProgram } from './exec.js';

export { commandAvailable, DEFAULT_TIMEOUT_MS, formatArgv } from './exec.js';
export type { ExecOptions, ExecResult } from './exec.js';

/** A command that ran and exited non-zero (or was killed by a signal); carries what is needed to act on it. */
export class NetnsCommandError extends PalisadeError {
  readonly argv: readonly string[];
  readonly exitCode: number;
  readonly stderr: string;

  constructor(namespace: string, argv: readonly string[], exitCode: number, stderr: string) {
    super('NETNS_COMMAND_FAILED', `in network namespace ${namespace}: ${formatArgv(argv)} exited with code ${exitCode}: ${stderr.trim() || '(no stderr)'}`);
    this.name = 'NetnsCommandError';
    this.argv = argv;
    this.exitCode = exitCode;
    this.stderr = stderr;
  }
}

/** Namespace names become files under /run/netns: keep them to characters that cannot escape that directory. */
const NAME_PREFIX = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

export class NetworkNamespace implements CommandRunner {
  readonly name: string;
  private destroyed = false;

  private constructor(name: string) {
    this.name = name;
  }

  /** Creates `${prefix}-${6 random hex}` with its loopback up (some tools, and any local traffic, need lo). */
  static async create(prefix: string): Promise<NetworkNamespace> {
    if (!NAME_PREFIX.test(prefix)) throw new PalisadeError('NETNS_NAME', `network namespace prefix "${prefix}": use letters, digits, "_", "." and "-", starting with a letter or digit`);
    const name = `${prefix}-${randomBytes(3).toString('hex')}`;
    await runHost(['ip', 'netns', 'add', name]);
    const namespace = new NetworkNamespace(name);
    try {
      await namespace.run(['ip', 'link', 'set', 'lo', 'up']);
    } catch (error) {
      // A namespace that was created but could not be set up must not outlive the failure.
      await namespace.destroy();
      throw error;
    }
    return namespace;
  }

  /** Runs argv inside the namespace. A non-zero exit is a result, not an error. */
  async exec(argv: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
    if (argv.length === 0) throw new PalisadeError('NETNS_EXEC', 'no program given to run in a network namespace');
    if (this.destroyed) throw new PalisadeError('NETNS_EXEC', `network namespace ${this.name} was destroyed; cannot run ${formatArgv(argv)}`);
    const result = await spawnCollect(['ip', 'netns', 'exec', this.name, ...argv], options);
    if (programNotStarted(result)) {
      throw new PalisadeError('NETNS_EXEC', `cannot start ${formatArgv(argv)} in network namespace ${this.name}: ${result.stderr.trim()}`);
    }
    return result;
  }

  /** Starts a long-running program inside the namespace, its stdout handed over line by line. */
  follow(argv: readonly string[], onLine: (line: string) => void): FollowedProgram {
    if (this.destroyed) return { exited: Promise.resolve(127), stop: () => {} };
    return followLines(['ip', 'netns', 'exec', this.name, ...argv], onLine);
  }

  /** As a CommandRunner, a namespace makes every driver given it run its programs inside. */
  describe(): string {
    return `network namespace ${this.name}`;
  }

  /**
   * Starts a long-running program inside the namespace (a server, an agent, a daemon) and hands back
   * the child; `ip netns exec` execs it in place, so signals sent to the child reach the program.
   * With `ownGroup`, it leads its own process group, so one signal to the group reaches all it starts.
   */
  spawn(argv: readonly string[], options: { stdin?: 'pipe' | 'ignore'; ownGroup?: boolean; env?: Readonly<Record<string, string>> } = {}): ChildProcess {
    if (this.destroyed) throw new PalisadeError('NETNS_EXEC', `network namespace ${this.name} was destroyed; cannot start ${formatArgv(argv)}`);
    return spawn('ip', ['netns', 'exec', this.name, ...argv], {
      stdio: [options.stdin ?? 'ignore', 'pipe', 'pipe'],
      detached: options.ownGroup ?? false,
      env: { ...process.env, ...options.env, LC_ALL: 'C' },
    });
  }

  /** Like exec, but a non-zero exit throws NetnsCommandError; returns stdout. */
  async run(argv: readonly string[], options: ExecOptions = {}): Promise<string> {
    const result = await this.exec(argv, options);
    if (result.code !== 0) throw new NetnsCommandError(this.name, argv, result.code, result.stderr);
    return result.stdout;
  }

  /** Deletes the namespace (and with it every rule and set inside). Safe to call twice, or after an outside delete. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    await killProcessesIn(this.name);
    const result = await spawnCollect(['ip', 'netns', 'del', this.name], {});
    if (result.code !== 0 && (await listNamespaces()).includes(this.name)) {
      throw new NetnsCommandError('(root)', ['ip', 'netns', 'del', this.name], result.code, result.stderr);
    }
    this.destroyed = true;
  }
}

/**
 * Kills what still runs inside a namespace about to go: a program orphaned by a killed parent (an
 * `ip monitor` a SIGKILLed daemon started) would otherwise keep the namespace's network alive
 * unseen, with no name left to find it by.
 */
async function killProcessesIn(name: string): Promise<void> {
  const listed = await spawnCollect(['ip', 'netns', 'pids', name], {});
  if (listed.code !== 0) return;
  for (const pid of listed.stdout.split('\n').map((l) => Number(l.trim())).filter((n) => Number.isInteger(n) && n > 1 && n !== process.pid)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Gone already.
    }
  }
}

/** Whether this process can create network namespaces at all, with the reason when it cannot. */
export async function netnsSupported(): Promise<{ ok: true } | { ok: false; reason: string }> {
  if (process.platform !== 'linux') return { ok: false, reason: `network namespaces need Linux, not ${process.platform}` };
  if (process.getuid?.() !== 0) return { ok: false, reason: 'network namespaces need root (uid 0)' };
  if (!(await commandAvailable('ip'))) return { ok: false, reason: 'the ip program (iproute2) is not on PATH' };
  // Root in a container may still lack CAP_SYS_ADMIN or a writable /run/netns: only trying tells.
  try {
    const probe = await NetworkNamespace.create('palprobe');
    await probe.destroy();
  } catch (error) {
    return { ok: false, reason: `cannot create a probe network namespace: ${error instanceof Error ? error.message : String(error)}` };
  }
  return { ok: true };
}

/**
 * Deletes namespaces named `${prefix}-...`: the leftovers of a run that crashed before its teardown.
 * Only names with the dash are touched, so "paltest-a" never removes "paltest-ab-...". Returns their names.
 */
export async function removeStaleNamespaces(prefix: string): Promise<string[]> {
  if (!NAME_PREFIX.test(prefix)) throw new PalisadeError('NETNS_NAME', `network namespace prefix "${prefix}" is not valid`);
  const stale = (await listNamespaces()).filter((name) => name.startsWith(`${prefix}-`));
  for (const name of stale) {
    await killProcessesIn(name);
    const result = await spawnCollect(['ip', 'netns', 'del', name], {});
    if (result.code !== 0 && (await listNamespaces()).includes(name)) {
      throw new NetnsCommandError('(root)', ['ip', 'netns', 'del', name], result.code, result.stderr);
    }
  }
  return stale;
}

/** Names of the named network namespaces; `ip netns list` prints "name" or "name (id: N)" per line. */
async function listNamespaces(): Promise<string[]> {
  const stdout = await runHost(['ip', 'netns', 'list']);
  return stdout.split('\n').map((line) => line.trim().split(/\s+/)[0] ?? '').filter((name) => name !== '');
}

/** For `ip netns add/del/list` only, which act on namespace names, never on the root namespace's network. */
async function runHost(argv: readonly string[]): Promise<string> {
  const result = await spawnCollect(argv, {});
  if (result.code !== 0) throw new NetnsCommandError('(root)', argv, result.code, result.stderr);
  return result.stdout;
}


/**
 * `ip netns exec` reports a program it could not exec with this line and a non-zero exit, before
 * anything ran; that is the only way to tell "not started" from "started and failed" through it.
 */
function programNotStarted(result: ExecResult): boolean {
  return result.code !== 0 && result.stdout === '' && /^exec of ".*" failed: /.test(result.stderr);
}
