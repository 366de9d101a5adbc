/**
 * Running programs: argv arrays and stdin, never a shell. Every driver that runs a program takes a
 * CommandRunner, so the same driver runs on the host (the daemon) or inside a test's network namespace.
 */
import { spawn } from 'node:child_process';
import { constants as fsConstants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import path from 'node:path';
import { constants as osConstants } from 'node:os';
import { PalisadeError } from './errors.js';

export interface ExecResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface ExecOptions {
  /** Written to the program's stdin, which is then closed; without it stdin is /dev/null. */
  readonly input?: string;
  /** The program is killed after this long and the call fails with EXEC_TIMEOUT. Default 30 s. */
  readonly timeoutMs?: number;
}

export const DEFAULT_TIMEOUT_MS = 30_000;

/** A long-running program whose output is read line by line as it comes (an event stream such as `ip monitor`). */
export interface FollowedProgram {
  /** Resolves with the exit code (128 + signal when killed) once the program has gone, however it went. */
  readonly exited: Promise<number>;
  stop(): void;
}

/** Runs a program; a non-zero exit is a result, not an error. */
export interface CommandRunner {
  exec(argv: readonly string[], options?: ExecOptions): Promise<ExecResult>;
  /** Starts a long-running program and hands over each line it prints on stdout. */
  follow(argv: readonly string[], onLine: (line: string) => void): FollowedProgram;
  /** Where programs run, for error messages: "host", "network namespace x". */
  describe(): string;
}

export const hostRunner: CommandRunner = {
  exec: (argv, options = {}) => spawnCollect(argv, options),
  follow: (argv, onLine) => followLines(argv, onLine),
  describe: () => 'host',
};

/**
 * Spawns argv and splits its stdout into lines. A program that cannot start counts as exiting at once
 * (code 127, as a shell would say), so a caller's restart logic covers both.
 */
export function followLines(argv: readonly string[], onLine: (line: string) => void): FollowedProgram {
  const [program, ...args] = argv;
  if (program === undefined) return { exited: Promise.resolve(127), stop: () => {} };
  const child = spawn(program, args, { stdio: ['ignore', 'pipe', 'ignore'], env: { ...process.env, LC_ALL: 'C' } });
  let partial = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    const parts = (partial + chunk.toString('utf8')).split('\n');
    partial = parts.pop() ?? '';
    for (const line of parts) onLine(line);
  });
  const exited = new Promise<number>((resolve) => {
    child.on('error', () => resolve(127));
    child.on('close', (code, signal) => resolve(code ?? signalExitCode(signal)));
  });
  return { exited, stop: () => void child.kill('SIGTERM') };
}

/** Spawns argv with its own process group, so a timeout kills the program and anything it started. */
export function spawnCollect(argv: readonly string[], options: ExecOptions): Promise<ExecResult> {
  const [program, ...args] = argv;
  if (program === undefined) return Promise.reject(new PalisadeError('EXEC_START', 'no program given'));
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
      reject(new PalisadeError('EXEC_START', `cannot start ${formatArgv(argv)}: ${error.message}`, { cause: error }));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const err = Buffer.concat(stderr).toString('utf8');
      if (timedOut) {
        reject(new PalisadeError('EXEC_TIMEOUT', `${formatArgv(argv)} did not finish within ${timeoutMs} ms and was killed; stderr: ${err.trim() || '(none)'}`));
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

/** Whether `name` is an executable file on PATH (or, given a path, is one), found the way execvp would. */
export async function commandAvailable(name: string): Promise<boolean> {
  if (name === '') return false;
  if (name.includes('/')) return isExecutableFile(name);
  // An empty PATH entry means the current directory; a test must not pick up whatever lies there.
  const dirs = (process.env['PATH'] ?? '').split(path.delimiter).filter((dir) => dir !== '');
  for (const dir of dirs) if (await isExecutableFile(path.join(dir, name))) return true;
  return false;
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
