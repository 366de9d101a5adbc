/**
 * Fake programs for tests that need a command to fail the way a real one would: a temp directory of
 * small scripts, put first on PATH for one step only. `ip netns exec` is spawned with process.env, so
 * a fake placed here is what runs inside the test's namespace; PATH is restored afterwards even when
 * the step throws.
 *
 * The scripts are fixed text written by the test (paths are single-quoted and checked); nothing from
 * outside the test reaches them, and they are run by argv like any other program.
 */
import { constants as fsConstants } from 'node:fs';
import { access, chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

/** The absolute path of `name` as execvp would find it on the current PATH (call before faking it). */
export async function findOnPath(name: string): Promise<string> {
  const dirs = (process.env['PATH'] ?? '').split(path.delimiter).filter((dir) => dir !== '');
  for (const dir of dirs) {
    const candidate = path.join(dir, name);
    try {
      await access(candidate, fsConstants.X_OK);
      if ((await stat(candidate)).isFile()) return candidate;
    } catch {
      // Not in this directory.
    }
  }
  throw new Error(`${name} is not on PATH`);
}

/** Single-quotes text for the fixed scripts below; refuses anything that could end the quoting. */
function quoted(text: string): string {
  if (text.includes("'") || text.includes('\n')) throw new Error(`fake program: cannot quote ${JSON.stringify(text)}`);
  return `'${text}'`;
}

export class FakeBinDir {
  readonly dir: string;

  private constructor(dir: string) {
    this.dir = dir;
  }

  static async create(): Promise<FakeBinDir> {
    return new FakeBinDir(await mkdtemp(path.join(os.tmpdir(), 'palisade-dataplane-fake-')));
  }

  file(name: string): string {
    return path.join(this.dir, name);
  }

  /** A program that reads its stdin, prints `stderrLine` to stderr and exits with `exitCode`. */
  async failing(name: string, stderrLine: string, exitCode: number): Promise<void> {
    await this.write(name, [
      'cat >/dev/null',
      `printf '%s\\n' ${quoted(stderrLine)} >&2`,
      `exit ${exitCode}`,
    ]);
  }

  /**
   * A program that fails like `failing` for its first `failures` runs, then execs `realProgram` with
   * the same arguments and stdin. Each run is counted in the file `calls(name)` names.
   */
  async flaky(name: string, options: { failures: number; stderrLine: string; exitCode: number; realProgram: string }): Promise<void> {
    const counter = quoted(this.callsFile(name));
    await this.write(name, [
      `calls=$(cat ${counter} 2>/dev/null || echo 0)`,
      'calls=$((calls + 1))',
      `echo "$calls" > ${counter}`,
      `if [ "$calls" -le ${options.failures} ]; then`,
      '  cat >/dev/null',
      `  printf '%s\\n' ${quoted(options.stderrLine)} >&2`,
      `  exit ${options.exitCode}`,
      'fi',
      `exec ${quoted(options.realProgram)} "$@"`,
    ]);
  }

  /** How many times a `flaky` program has run. */
  async calls(name: string): Promise<number> {
    const text = await readFile(this.callsFile(name), 'utf8').catch(() => '0');
    return Number(text.trim());
  }

  /** Runs `step` with this directory first on PATH, and puts PATH back afterwards whatever happens. */
  async onPath<T>(step: () => Promise<T>): Promise<T> {
    const saved = process.env['PATH'];
    process.env['PATH'] = saved === undefined ? this.dir : `${this.dir}${path.delimiter}${saved}`;
    try {
      return await step();
    } finally {
      if (saved === undefined) delete process.env['PATH'];
      else process.env['PATH'] = saved;
    }
  }

  async remove(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }

  private callsFile(name: string): string {
    return path.join(this.dir, `${name}.calls`);
  }

  private async write(name: string, body: readonly string[]): Promise<void> {
    if (name.includes('/')) throw new Error(`fake program name ${name} must not contain "/"`);
    const file = this.file(name);
    await writeFile(file, ['#!/bin/sh', ...body, ''].join('\n'));
    await chmod(file, 0o755);
  }
}
