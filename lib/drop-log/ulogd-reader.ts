/**
 * The drop log's NFLOG reader: netfilter.org's ulogd, run as a child, reading one NFLOG group and
 * sending each record as a line of JSON to a unix socket palisade listens on. Its own log arrives on
 * its stdout and goes to palisade's log.
 *
 *   kernel NFLOG group ──netlink──▶ ulogd (NFLOG,BASE,IP2STR,JSON) ──unix socket──▶ parseUlogdLine ──▶ events.packet
 *                                     │ stdout: its log                              SequenceTracker ──▶ events.lost
 *                                     └──────────────▶ logger (errors), start()'s verdict (ready, group busy)
 *
 * Should ulogd die, it is started again after a backoff; while it is gone the kernel has nobody to
 * hand records to and drops them uncounted, which is logged. A line that cannot be read is skipped,
 * logged once per kind and counted; nothing a line holds can throw out of this class.
 */
import { createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { PalisadeError } from '../errors.js';
import { commandAvailable } from '../exec.js';
import type { CommandRunner, FollowedProgram } from '../exec.js';
import type { Logger } from '../logger.js';
import type { NflogReader, NflogReaderEvents } from './nflog-packet.js';
import { SequenceTracker } from './sequence-gaps.js';
import { isGroupBusy, isOverrun, isUlogdReady, parseUlogdLogLine, renderUlogdConfig, ULOGD_LOG_LEVEL } from './ulogd-config.js';
import { findUlogdPluginDir, findUlogdProgram } from './ulogd-install.js';
import { parseUlogdLine } from './ulogd-record.js';

export interface UlogdReaderOptions {
  /** The NFLOG group of palisade's log rules (`--nflog-group`), 1 to 65535. */
  readonly group: number;
  /** Where ulogd runs: the host for the daemon, a network namespace in tests. */
  readonly runner: CommandRunner;
  /** Holds the configuration, the socket and the pid file; created if missing. Keep it short (socket path limit). */
  readonly workDir: string;
  readonly logger: Logger;
  readonly events: NflogReaderEvents;
  /** The netlink socket's receive buffer. Default 1 MiB: several seconds of the kernel's rate-limited drop log. */
  readonly socketBufferBytes?: number;
  /** The kernel hands over a batch once it holds this many records (default 1: each at once)... */
  readonly queueThreshold?: number;
  /** ...or once its first record has waited this long (default 100 ms). */
  readonly queueTimeoutMs?: number;
  /** How long ulogd may take to bind the group. Default 10 s. */
  readonly startTimeoutMs?: number;
  /** Restart backoff after ulogd died: doubles from the base to the maximum. Defaults 500 ms, 30 s. */
  readonly restartBaseMs?: number;
  readonly restartMaxMs?: number;
  /** Injected so tests need not wait. */
  readonly sleep?: (ms: number) => Promise<void>;
  /** The ulogd program and its plugin directory; found on this machine when not given. */
  readonly program?: string;
  readonly pluginDir?: string;
}

/** One run of ulogd: its records are numbered from 0 again. */
interface Incarnation {
  readonly tracker: SequenceTracker;
  readonly recentLog: string[];
  readonly startedAt: number;
  program: FollowedProgram | null;
  ready: boolean;
  groupBusy: boolean;
  exited: boolean;
  pid: number | null;
}

const RECENT_LOG_LINES = 20;
const MAX_LINE_BYTES = 1 << 20;
/** A run this long resets the backoff. */
const STABLE_RUN_MS = 60_000;
const STOP_GRACE_MS = 5_000;

const unrefSleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms).unref());

export class UlogdReader implements NflogReader {
  private readonly options: UlogdReaderOptions;
  private readonly configPath: string;
  private readonly socketPath: string;
  private readonly pidPath: string;
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();
  private current: Incarnation | null = null;
  private started = false;
  private stopping = false;
  private attempt = 0;
  private program = '';
  private readonly problems = new Map<string, number>();

  constructor(options: UlogdReaderOptions) {
    this.options = options;
    this.configPath = path.join(options.workDir, 'ulogd.conf');
    this.socketPath = path.join(options.workDir, 'ulogd.sock');
    this.pidPath = path.join(options.workDir, 'ulogd.pid');
  }

  get running(): boolean {
    return this.started;
  }

  /** The running ulogd's process id, null while none runs. */
  get pid(): number | null {
    const current = this.current;
    return current !== null && current.ready && !current.exited ? current.pid : null;
  }

  /** Lines skipped, by kind of problem. */
  get skipped(): ReadonlyMap<string, number> {
    return this.problems;
  }

  async start(): Promise<void> {
    if (this.started) return;
    this.stopping = false;
    const { options } = this;
    const config = renderUlogdConfig({
      group: options.group,
      pluginDir: options.pluginDir ?? (await findUlogdPluginDir()),
      socketPath: this.socketPath,
      socketBufferBytes: options.socketBufferBytes ?? 1 << 20,
      queueThreshold: options.queueThreshold ?? 1,
      queueTimeoutMs: options.queueTimeoutMs ?? 100,
    });
    this.program = options.program ?? (await findUlogdProgram());
    if (!(await commandAvailable(this.program))) throw new PalisadeError('NFLOG_READER_MISSING', `the ulogd program ${this.program} is not there or not executable`);
    await mkdir(options.workDir, { recursive: true, mode: 0o700 });
    await this.killPredecessor();
    await writeFile(this.configPath, config, { mode: 0o600 });
    try {
      await this.listen();
      await this.launch();
    } catch (error) {
      await this.cleanUp();
      throw error;
    }
    this.started = true;
    this.attempt = 0;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.started = false;
    const current = this.current;
    if (current?.program != null && !current.exited) {
      current.program.stop();
      if (!(await exitsWithin(current.program, STOP_GRACE_MS)) && current.pid !== null) {
        this.options.logger.warn({ group: this.options.group, pid: current.pid }, 'ulogd did not stop on SIGTERM; killing it');
        killQuietly(current.pid, 'SIGKILL');
        await exitsWithin(current.program, STOP_GRACE_MS);
      }
    }
    this.current = null;
    await this.cleanUp();
  }

  // -------------------------------------------------------------------------------------------------
  // ulogd's process
  // -------------------------------------------------------------------------------------------------

  /** Starts ulogd; resolves once it has bound the group, rejects if it exits or stalls first. */
  private async launch(): Promise<void> {
    const { options } = this;
    await rm(this.pidPath, { force: true });
    const run: Incarnation = { tracker: new SequenceTracker(), recentLog: [], startedAt: Date.now(), program: null, ready: false, groupBusy: false, exited: false, pid: null };
    this.current = run;
    const argv = [this.program, '-c', this.configPath, '-p', this.pidPath];
    await new Promise<void>((resolve, reject) => {
      let settled = false;
      const settle = (error: PalisadeError | null): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (error === null) resolve();
        else reject(error);
      };
      const timeoutMs = options.startTimeoutMs ?? 10_000;
      const timer = setTimeout(() => {
        settle(new PalisadeError('NFLOG_READER_START', `ulogd for NFLOG group ${options.group} in ${options.runner.describe()} did not report ready within ${timeoutMs} ms; its log: ${tail(run)}`));
        run.program?.stop();
      }, timeoutMs);
      run.program = options.runner.follow(argv, (line) => {
        this.onLogLine(run, line);
        if (!run.ready && isUlogdReady(parseUlogdLogLine(line).message)) {
          run.ready = true;
          void this.readPid().then((pid) => {
            run.pid = pid;
            settle(null);
          });
        }
      });
      void run.program.exited.then((code) => {
        run.exited = true;
        if (!run.ready) settle(this.startError(run, code));
        else void this.onExit(run, code);
      });
    });
  }

  private startError(run: Incarnation, code: number): PalisadeError {
    const where = this.options.runner.describe();
    if (run.groupBusy) {
      return new PalisadeError('NFLOG_GROUP_BUSY', `NFLOG group ${this.options.group} in ${where} is already bound by another listener (one per group): stop it or choose another group; ulogd said: ${tail(run)}`);
    }
    if (run.recentLog.length === 0) {
      return new PalisadeError('NFLOG_READER_START', `ulogd (${this.program}) for NFLOG group ${this.options.group} could not be started in ${where} (exit code ${code}, no output)`);
    }
    return new PalisadeError('NFLOG_READER_START', `ulogd for NFLOG group ${this.options.group} in ${where} exited with code ${code} before it was ready: ${tail(run)}`);
  }

  private async onExit(run: Incarnation, code: number): Promise<void> {
    if (this.stopping || this.current !== run) return;
    const { logger, group } = { logger: this.options.logger, group: this.options.group };
    if (Date.now() - run.startedAt >= STABLE_RUN_MS) this.attempt = 0;
    logger.error({ group, code, ulogdLog: run.recentLog.slice(-5) }, 'ulogd exited; drop-log records are lost uncounted until it runs again');
    const sleep = this.options.sleep ?? unrefSleep;
    while (!this.stopping) {
      const delay = Math.min(this.options.restartMaxMs ?? 30_000, (this.options.restartBaseMs ?? 500) * 2 ** this.attempt);
      this.attempt++;
      logger.info({ group, delayMs: delay }, 'starting ulogd again after a pause');
      await sleep(delay);
      if (this.stopping) return;
      try {
        await this.launch();
        logger.info({ group, pid: this.current?.pid ?? null }, 'ulogd runs again');
        return;
      } catch (error) {
        if (this.stopping) return;
        logger.error({ group, err: error instanceof Error ? error.message : String(error) }, 'ulogd did not start again');
      }
    }
  }

  private onLogLine(run: Incarnation, line: string): void {
    if (line.trim() === '') return;
    run.recentLog.push(line);
    if (run.recentLog.length > RECENT_LOG_LINES) run.recentLog.shift();
    const { level, message } = parseUlogdLogLine(line);
    const fields = { group: this.options.group, ulogd: message };
    if (isGroupBusy(message)) run.groupBusy = true;
    if (isOverrun(message)) this.options.logger.warn(fields, 'ulogd: the netlink socket overran; the sequence gap counts the records lost');
    else if (level === null || level >= ULOGD_LOG_LEVEL.error) this.options.logger.error(fields, 'ulogd');
    else this.options.logger.debug(fields, 'ulogd');
  }

  private async readPid(): Promise<number | null> {
    const text = await readFile(this.pidPath, 'utf8').catch(() => '');
    const pid = Number(text.trim());
    return Number.isInteger(pid) && pid > 1 ? pid : null;
  }

  /** A ulogd left running by a palisade that was killed holds the group: end it, but only if it is ours. */
  private async killPredecessor(): Promise<void> {
    const pid = await this.readPid();
    if (pid === null) return;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (!cmdline.split('\0').includes(this.configPath)) return;
    this.options.logger.warn({ group: this.options.group, pid }, 'ending the ulogd an earlier palisade left running');
    killQuietly(pid, 'SIGKILL');
    for (let i = 0; i < 100 && (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => null)) !== null; i++) await unrefSleep(20);
  }

  // -------------------------------------------------------------------------------------------------
  // The records
  // -------------------------------------------------------------------------------------------------

  private async listen(): Promise<void> {
    await rm(this.socketPath, { force: true });
    const server = createServer((socket) => this.accept(socket));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (error) => reject(new PalisadeError('NFLOG_READER_START', `cannot listen on ${this.socketPath}: ${error.message}`, { cause: error })));
      server.listen(this.socketPath, () => resolve());
    });
    server.on('error', (error) => this.options.logger.error({ err: error.message }, 'the drop-log socket failed'));
    await chmod(this.socketPath, 0o600);
  }

  /** ulogd connects once per run, and again after a failed send; its records belong to the run current now. */
  private accept(socket: Socket): void {
    const run = this.current;
    this.sockets.add(socket);
    let partial = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      const parts = (partial + chunk).split('\n');
      partial = parts.pop() ?? '';
      if (partial.length > MAX_LINE_BYTES) {
        this.skip('overlong', `a line longer than ${MAX_LINE_BYTES} bytes`, partial);
        partial = '';
      }
      for (const line of parts) if (line !== '' && run !== null) this.onRecord(run, line);
    });
    socket.on('error', () => {});
    socket.on('close', () => this.sockets.delete(socket));
  }

  private onRecord(run: Incarnation, line: string): void {
    const parsed = parseUlogdLine(line, new Date());
    if (!parsed.ok) {
      this.skip(parsed.problem, parsed.detail, line);
      return;
    }
    if (parsed.seq === null) {
      this.skip('no-sequence', 'a record without oob.seq.local: losses cannot be counted', line, false);
    } else {
      const verdict = run.tracker.observe(parsed.seq);
      if (verdict.kind === 'gap') {
        this.deliver(() => this.options.events.lost(verdict.missing, `NFLOG group ${this.options.group}: records ${verdict.expected} to ${parsed.seq! - 1} never arrived (netlink socket overrun, or lost on the way from ulogd)`));
      } else if (verdict.kind === 'backwards') {
        this.skip('sequence-backwards', `sequence number ${parsed.seq} after ${verdict.expected - 1}`, line, false);
      }
    }
    this.deliver(() => this.options.events.packet(parsed.packet));
  }

  /** A listener that throws must not take the reader, or the daemon, down with it. */
  private deliver(call: () => void): void {
    try {
      call();
    } catch (error) {
      this.options.logger.error({ group: this.options.group, err: error instanceof Error ? error.message : String(error) }, 'a drop-log listener threw');
    }
  }

  private skip(kind: string, detail: string, line: string, dropped = true): void {
    const seen = this.problems.get(kind) ?? 0;
    this.problems.set(kind, seen + 1);
    if (seen > 0) return;
    this.options.logger.warn({ group: this.options.group, kind, detail, line: line.slice(0, 300) }, dropped ? 'skipped a drop-log record palisade cannot read; others of this kind are counted, not logged' : 'a drop-log record palisade reads only in part; others of this kind are counted, not logged');
  }

  private async cleanUp(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
    const server = this.server;
    this.server = null;
    if (server !== null) await new Promise<void>((resolve) => server.close(() => resolve()));
    await Promise.all([this.configPath, this.socketPath, this.pidPath].map((file) => rm(file, { force: true })));
  }
}

function tail(run: Incarnation): string {
  const errors = run.recentLog.filter((line) => {
    const { level } = parseUlogdLogLine(line);
    return level === null || level >= ULOGD_LOG_LEVEL.error;
  });
  return (errors.length > 0 ? errors : run.recentLog.slice(-5)).map((line) => parseUlogdLogLine(line).message).join(' | ') || '(no output)';
}

function exitsWithin(program: FollowedProgram, ms: number): Promise<boolean> {
  return Promise.race([program.exited.then(() => true), unrefSleep(ms).then(() => false)]);
}

function killQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Gone already.
  }
}
