/**
 * Network namespaces for tests, end-to-end runs and demos: the one place that runs programs against a
 * kernel firewall. Everything it runs goes through `ip netns exec NAME`, so nothing here can touch the
 * firewall, routes or addresses of the machine's own namespace. Programs are spawned with argv arrays
 * (never a shell) and fed through stdin.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import path from 'node:path';
import { PalisadeError } from './errors.js';

export interface ExecResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface ExecOptions {
  /** Written to the program's stdin, which is then closed; without it stdin is /dev/null. */
  readonly input?: string;
  /** The program is killed after this long and the call fails with NETNS_TIMEOUT. Default 30 s. */
  readonly timeoutMs?: number;
}

export const DEFAULT_TIMEOUT_MS = 30_000;

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

export class NetworkNamespace {
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

  /** Like exec, but a non-zero exit throws NetnsCommandError; returns stdout. */
  async run(argv: readonly string[], options: ExecOptions = {}): Promise<string> {
    const result = await this.exec(argv, options);
    if (result.code !== 0) throw new NetnsCommandError(this.name, argv, result.code, result.stderr);
    return result.stdout;
  }

  /** Deletes the namespace (and with it every rule and set inside). Safe to call twice, or after an outside delete. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    const result = await spawnCollect(['ip', 'netns', 'del', this.name], {});
    if (result.code !== 0 && (await listNamespaces()).includes(this.name)) {
      throw new NetnsCommandError('(root)', ['ip', 'netns', 'del', this.name], result.code, result.stderr);
    }
    this.destroyed = true;
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

/** Whether `name` is an executable file on PATH (or, given a path, is one), found the way execvp would. */
export async function commandAvailable(name: string): Promise<boolean> {
  if (name === '') return false;
  if (name.includes('/')) return isExecutableFile(name);
  // An empty PATH entry means the current directory; a test must not pick up whatever lies there.
  const dirs = (process.env['PATH'] ?? '').split(path.delimiter).filter((dir) => dir !== '');
  for (const dir of dirs) if (await isExecutableFile(path.join(dir, name))) return true;
  return false;
}

/**
 * Deletes namespaces named `${prefix}-...`: the leftovers of a run that crashed before its teardown.
 * Only names with the dash are touched, so "paltest-a" never removes "paltest-ab-...". Returns their names.
 */
export async function removeStaleNamespaces(prefix: string): Promise<string[]> {
  if (!NAME_PREFIX.test(prefix)) throw new PalisadeError('NETNS_NAME', `network namespace prefix "${prefix}" is not valid`);
  const stale = (await listNamespaces()).filter((name) => name.startsWith(`${prefix}-`));
  for (const name of stale) {
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

async function isExecutableFile(file: string): Promise<boolean> {
  try {
    await access(file, fsConstants.X_OK);
    // Directories pass the X_OK check too.
    return (await stat(file)).isFile();
  } catch {
    return false;
  }
}

/**
 * `ip netns exec` reports a program it could not exec with this line and a non-zero exit, before
 * anything ran; that is the only way to tell "not started" from "started and failed" through it.
 */
function programNotStarted(result: ExecResult): boolean {
  return result.code !== 0 && result.stdout === '' && /^exec of ".*" failed: /.test(result.stderr);
}

/** Spawns argv with its own process group, so a timeout kills the program and anything it started. */
function spawnCollect(argv: readonly string[], options: ExecOptions): Promise<ExecResult> {
  const [program, ...args] = argv;
  if (program === undefined) return Promise.reject(new PalisadeError('NETNS_EXEC', 'no program given'));
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    // LC_ALL=C keeps error messages in English, so they can be matched and read in reports.
    const child = spawn(program, args, {
      stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      env: { ...process.env, LC_ALL: 'C' },
      detached: true,
    });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child.pid);
    }, timeoutMs);
    child.stdout?.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr?.on('data', (chunk: Buffer) => stderr.push(chunk));
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(new PalisadeError('NETNS_EXEC', `cannot start ${formatArgv(argv)}: ${error.message}`, { cause: error }));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const err = Buffer.concat(stderr).toString('utf8');
      if (timedOut) {
        reject(new PalisadeError('NETNS_TIMEOUT', `${formatArgv(argv)} did not finish within ${timeoutMs} ms and was killed; stderr: ${err.trim() || '(none)'}`));
        return;
      }
      resolve({ code: code ?? signalExitCode(signal), stdout: Buffer.concat(stdout).toString('utf8'), stderr: err });
    });
    if (child.stdin !== null) {
      // A program that exits without reading all its input closes the pipe; its exit code tells what happened.
      child.stdin.on('error', () => {});
      child.stdin.end(options.input);
    }
  });
}

function killGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // Already gone between the timer firing and the kill.
  }
}

/** The shell convention, 128 + signal number, so a killed program still reports a non-zero code. */
function signalExitCode(signal: NodeJS.Signals | null): number {
  if (signal === null) return 1;
  return 128 + (osConstants.signals[signal] ?? 0);
}

export function formatArgv(argv: readonly string[]): string {
  return argv.map((arg) => (/^[A-Za-z0-9_.:/,+=@%-]+$/.test(arg) ? arg : JSON.stringify(arg))).join(' ');
}
