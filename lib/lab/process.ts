import type { ChildProcess } from 'node:child_process';
import type { NetworkNamespace } from '../netns.js';

/**
 * A long-running program inside a network namespace (a daemon, the lab API server), its output kept
 * line by line. `ip netns exec` execs the program in place, so signals sent here reach it directly.
 */
export class LabProcess {
  readonly child: ChildProcess;
  readonly lines: string[] = [];
  private readonly exited: Promise<number | null>;

  private constructor(child: ChildProcess) {
    this.child = child;
    let partial = '';
    const collect = (chunk: Buffer) => {
      const parts = (partial + chunk.toString('utf8')).split('\n');
      partial = parts.pop() ?? '';
      this.lines.push(...parts.filter((l) => l !== ''));
    };
    child.stdout?.on('data', collect);
    child.stderr?.on('data', collect);
    this.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve(code ?? (signal === null ? null : 128))));
  }

  /** `env` adds to (or overrides) this process's environment. */
  static start(ns: NetworkNamespace, argv: readonly string[], env: Readonly<Record<string, string>> = {}): LabProcess {
    return new LabProcess(ns.spawn(argv, { env }));
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Waits for a line matching `pattern`, or fails with everything the program printed. */
  async waitFor(pattern: RegExp, timeoutMs = 15_000, from = 0): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.lines.slice(from).find((l) => pattern.test(l));
      if (found !== undefined) return found;
      if (!this.running || Date.now() > deadline) {
        throw new Error(`no line matching ${pattern} (exit code ${this.child.exitCode}); output:\n${this.lines.slice(-40).join('\n')}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** Sends `signal`, and SIGKILL if the program is still there after `timeoutMs`; resolves with its exit code. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 10_000): Promise<number | null> {
    if (this.running) this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }
}
