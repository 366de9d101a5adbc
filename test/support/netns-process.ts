import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import type { NetworkNamespace } from '../../lib/netns.js';

/**
 * A long-running program inside a network namespace (a daemon, a fake API server), with its output
 * collected line by line. `ip netns exec` execs the program in place, so signals reach it directly.
 */
export class NetnsProcess {
  readonly child: ChildProcess;
  readonly lines: string[] = [];
  private exited: Promise<number | null>;

  private constructor(child: ChildProcess) {
    this.child = child;
    const collect = (chunk: Buffer) => this.lines.push(...chunk.toString('utf8').split('\n').filter((l) => l !== ''));
    child.stdout?.on('data', collect);
    child.stderr?.on('data', collect);
    this.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve(code ?? (signal === null ? null : 128))));
  }

  static start(ns: NetworkNamespace, argv: readonly string[]): NetnsProcess {
    const child = spawn('ip', ['netns', 'exec', ns.name, ...argv], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
    return new NetnsProcess(child);
  }

  /** Waits until a line matches, or fails with everything the program printed. */
  async waitFor(pattern: RegExp, timeoutMs = 15_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.lines.find((l) => pattern.test(l));
      if (found !== undefined) return found;
      if (this.child.exitCode !== null || Date.now() > deadline) {
        throw new Error(`no line matching ${pattern} (exit code ${this.child.exitCode}); output:\n${this.lines.join('\n')}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 10_000): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }
}
