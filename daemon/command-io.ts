import { ensureDaemonRuntime } from './runtime.js';
import type { RuntimeSetup } from './runtime.js';

/** Where a command writes; injected so tests can run commands in-process and read what they printed. */
export interface CommandIO {
  stdout(text: string): void;
  stderrLine(line: string): void;
  /** The environment, read only by the commands' configuration parsing. */
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Puts the daemon's V8 settings in place (runtime.ts); in-process tests leave the process alone. */
  readonly setUpRuntime?: () => RuntimeSetup;
}

export const processIO: CommandIO = {
  stdout: (text) => void process.stdout.write(text),
  stderrLine: (line) => void process.stderr.write(`${line}\n`),
  env: process.env,
  setUpRuntime: ensureDaemonRuntime,
};
