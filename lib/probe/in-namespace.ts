/**
 * Host side: runs the probe program (see command-line.ts) inside network namespaces, one `connect`
 * at a time or as a long-running echo server. agent-in-namespace.ts does the same for the agent.
 *
 * A probe that cannot run never reads as "blocked": the host-side helpers throw instead.
 */
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { formatArgv } from '../exec.js';
import type { NetworkNamespace } from '../netns.js';
import type { PodHandle } from '../pod-network.js';
import { EXIT_NOT_REACHED, EXIT_OK } from './command-line.js';
import { DEFAULT_PROBE_TIMEOUT_MS, PROBE_OUTCOMES, ProbeError } from './echo.js';
import type { ConnectOptions, EchoServerOptions, ProbeOutcome, ProbeProtocol } from './echo.js';

/** The compiled entry point, in dist/lib, one level up from this module in dist/lib/probe. */
export const PROBE_ENTRY = fileURLToPath(new URL('../probe-main.js', import.meta.url));
/** Beyond the probe's own timeout, how long starting node and `ip netns exec` may take. */
const SPAWN_ALLOWANCE_MS = 10_000;
export const SERVER_READY_TIMEOUT_MS = 10_000;
export const SERVER_STOP_GRACE_MS = 2_000;

export interface ProbeResult {
  readonly outcome: ProbeOutcome;
  /** Wall-clock time of the whole run, namespace entry and node start-up included. */
  readonly elapsedMs: number;
}

/** Runs one `connect` inside `from`. Throws ProbeError when the probe could not run, so that never reads as "blocked". */
export async function probeFrom(from: NetworkNamespace, options: ConnectOptions): Promise<ProbeResult> {
  const argv = [process.execPath, PROBE_ENTRY, 'connect', ...connectArgs(options)];
  const started = performance.now();
  const timeoutMs = options.timeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS;
  const result = await from.exec(argv, { timeoutMs: timeoutMs + SPAWN_ALLOWANCE_MS });
  const elapsedMs = Math.round(performance.now() - started);
  const word = result.stdout.trim();
  const outcome = PROBE_OUTCOMES.find((o) => o === word);
  const expectedCode = outcome === 'ok' ? EXIT_OK : EXIT_NOT_REACHED;
  if (outcome === undefined || result.code !== expectedCode) {
    throw new ProbeError(`probe in ${from.name} failed (exit ${result.code}): ${formatArgv(argv)}: ${word || result.stderr.trim() || '(no output)'}`);
  }
  return { outcome, elapsedMs };
}

function connectArgs(options: ConnectOptions): string[] {
  const args = ['--proto', options.proto, '--to', options.to, '--port', String(options.port), '--timeout-ms', String(options.timeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS)];
  if (options.from !== undefined) args.push('--from', options.from);
  return args;
}

/** Whether a round trip from the pod to `to` succeeds. */
export async function probe(from: PodHandle, to: string, proto: ProbeProtocol, port: number, options: { timeoutMs?: number; sourceIp?: string } = {}): Promise<boolean> {
  const result = await probeFrom(from.netns, {
    proto,
    to,
    port,
    ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
    ...(options.sourceIp === undefined ? {} : { from: options.sourceIp }),
  });
  return result.outcome === 'ok';
}

/** A long-running echo server inside a namespace; stop() it in teardown. */
export class ProbeServer {
  readonly netns: NetworkNamespace;
  readonly tcp: readonly number[];
  readonly udp: readonly number[];
  private readonly child: ChildProcess;
  private readonly exited: Promise<void>;

  private constructor(netns: NetworkNamespace, ports: EchoServerOptions, child: ChildProcess, exited: Promise<void>) {
    this.netns = netns;
    this.tcp = [...ports.tcp];
    this.udp = [...ports.udp];
    this.child = child;
    this.exited = exited;
  }

  /** Starts `serve` in the namespace and waits for "ready"; the server exits if this process dies (its stdin closes). */
  static async start(netns: NetworkNamespace, ports: EchoServerOptions): Promise<ProbeServer> {
    const args = ['serve', ...(ports.tcp.length > 0 ? ['--tcp', ports.tcp.join(',')] : []), ...(ports.udp.length > 0 ? ['--udp', ports.udp.join(',')] : []), '--until-stdin-closes'];
    const argv = [process.execPath, PROBE_ENTRY, ...args];
    // Its own process group, so stop() reaches it with one signal; stdin stays a pipe it watches.
    const child = netns.spawn(argv, { stdin: 'pipe', ownGroup: true });
    const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
    const server = new ProbeServer(netns, ports, child, exited);
    try {
      await waitForReady(child, argv);
    } catch (error) {
      await server.stop();
      throw error;
    }
    return server;
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Asks the server to stop, kills it if it has not after a grace period; resolves once it has exited. */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.stdin?.end();
    signalGroup(this.child, 'SIGTERM');
    const grace = setTimeout(() => signalGroup(this.child, 'SIGKILL'), SERVER_STOP_GRACE_MS);
    await this.exited;
    clearTimeout(grace);
  }
}

function waitForReady(child: ChildProcess, argv: readonly string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    const fail = (why: string): void => {
      clearTimeout(timer);
      reject(new ProbeError(`${formatArgv(argv)} ${why}; stderr: ${stderr.trim() || '(none)'}`));
    };
    const timer = setTimeout(() => fail(`did not print "ready" within ${SERVER_READY_TIMEOUT_MS} ms`), SERVER_READY_TIMEOUT_MS);
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => (stderr += chunk));
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (chunk: string) => {
      stdout += chunk;
      if (stdout.split('\n').includes('ready')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.stdin?.on('error', () => {});
    child.once('error', (error) => fail(`could not start: ${error.message}`));
    child.once('close', (code, signal) => fail(`exited (${signal ?? `code ${code}`}) before it was ready`));
  });
}

export function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // Already gone.
  }
}
