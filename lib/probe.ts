/**
 * A tiny TCP/UDP echo server and client for proving what a firewall lets through, and the host-side
 * helpers that run them inside network namespaces with the project's own node (process.execPath):
 *
 *   node dist/lib/probe-main.js serve --tcp 80,81 --udp 80,81 [--until-stdin-closes]
 *       binds 0.0.0.0 on every port, echoes everything, prints "ready" once all are bound
 *   node dist/lib/probe-main.js connect --proto tcp|udp --to IP --port N [--timeout-ms 1000] [--from IP]
 *       one echo round trip; prints ok | timeout | refused | unreachable (exit 0 only for ok),
 *       or "error: ..." (exit 2) when the probe itself could not run
 *
 * A probe that cannot run never reads as "blocked": the host-side helpers throw instead.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseIPv4 } from '../rules/ipv4.js';
import { PalisadeError } from './errors.js';
import { formatArgv } from './exec.js';
import type { NetworkNamespace } from './netns.js';
import type { PodHandle } from './pod-network.js';

export type ProbeProtocol = 'tcp' | 'udp';
/** What a round trip came to. `timeout` is what a DROP rule looks like from the client. */
export type ProbeOutcome = 'ok' | 'timeout' | 'refused' | 'unreachable';

export const PROBE_OUTCOMES: readonly ProbeOutcome[] = ['ok', 'timeout', 'refused', 'unreachable'];
export const DEFAULT_PROBE_TIMEOUT_MS = 1000;
/** The compiled entry point, next to this module in dist/lib. */
export const PROBE_ENTRY = fileURLToPath(new URL('./probe-main.js', import.meta.url));

/** Exit codes of the probe program. */
const EXIT_OK = 0;
const EXIT_NOT_REACHED = 1;
const EXIT_ERROR = 2;
/** UDP has no handshake: resend the datagram this often until the echo comes back or time runs out. */
const UDP_RESEND_MS = 100;
/** Beyond the probe's own timeout, how long starting node and `ip netns exec` may take. */
const SPAWN_ALLOWANCE_MS = 10_000;
const SERVER_READY_TIMEOUT_MS = 10_000;
const SERVER_STOP_GRACE_MS = 2_000;

export class ProbeError extends PalisadeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('PROBE', message, options);
    this.name = 'ProbeError';
  }
}

// ---------------------------------------------------------------------------------------------
// In-process server and client (what the probe program runs)
// ---------------------------------------------------------------------------------------------

export interface EchoServerOptions {
  readonly tcp: readonly number[];
  readonly udp: readonly number[];
  /** Default 0.0.0.0. */
  readonly host?: string;
}

export interface EchoServers {
  close(): Promise<void>;
}

/** Listens on every port given, echoing; resolves once all are bound, rejects (closing the rest) if one cannot be. */
export async function startEchoServers(options: EchoServerOptions): Promise<EchoServers> {
  const host = options.host ?? '0.0.0.0';
  const closers: (() => Promise<void>)[] = [];
  const close = async (): Promise<void> => {
    await Promise.allSettled(closers.map((c) => c()));
  };
  try {
    for (const port of options.tcp) closers.push(await listenTcpEcho(host, port));
    for (const port of options.udp) closers.push(await bindUdpEcho(host, port));
  } catch (error) {
    await close();
    throw error;
  }
  return { close };
}

async function listenTcpEcho(host: string, port: number): Promise<() => Promise<void>> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => sockets.delete(socket));
    socket.pipe(socket);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return () =>
    new Promise<void>((resolve) => {
      for (const socket of sockets) socket.destroy();
      server.close(() => resolve());
    });
}

async function bindUdpEcho(host: string, port: number): Promise<() => Promise<void>> {
  const socket = dgram.createSocket('udp4');
  socket.on('message', (message, peer) => socket.send(message, peer.port, peer.address));
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(port, host, () => {
      socket.off('error', reject);
      socket.on('error', () => {});
      resolve();
    });
  });
  return () => new Promise<void>((resolve) => socket.close(() => resolve()));
}

export interface ConnectOptions {
  readonly proto: ProbeProtocol;
  readonly to: string;
  readonly port: number;
  readonly timeoutMs?: number;
  /** Source address to bind (it must be held by the namespace), e.g. to send with a forged one. */
  readonly from?: string;
}

/** One echo round trip. Rejects only when the probe itself cannot run (bad address, bind failure...). */
export function connectOnce(options: ConnectOptions): Promise<ProbeOutcome> {
  return options.proto === 'tcp' ? tcpRoundTrip(options) : udpRoundTrip(options);
}

function probeToken(): string {
  return `palisade-probe ${randomBytes(8).toString('hex')}\n`;
}

/** Socket errors that are answers from the network rather than failures of the probe. */
function outcomeOfError(error: NodeJS.ErrnoException): ProbeOutcome | null {
  switch (error.code) {
    case 'ECONNREFUSED':
      return 'refused';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return 'unreachable';
    case 'ETIMEDOUT':
      return 'timeout';
    default:
      return null;
  }
}

function tcpRoundTrip(options: ConnectOptions): Promise<ProbeOutcome> {
  const token = probeToken();
  return new Promise((resolve, reject) => {
    let received = '';
    const socket = net.connect({ host: options.to, port: options.port, ...(options.from === undefined ? {} : { localAddress: options.from }) });
    const finish = (settle: () => void): void => {
      clearTimeout(timer);
      socket.destroy();
      settle();
    };
    const timer = setTimeout(() => finish(() => resolve('timeout')), options.timeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS);
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(token));
    socket.on('data', (chunk: string) => {
      received += chunk;
      if (received.includes(token)) finish(() => resolve('ok'));
    });
    socket.on('error', (error: NodeJS.ErrnoException) => {
      const outcome = outcomeOfError(error);
      finish(() => (outcome === null ? reject(error) : resolve(outcome)));
    });
    // The server closing without echoing is not a round trip; wait for the timer to call it.
  });
}

function udpRoundTrip(options: ConnectOptions): Promise<ProbeOutcome> {
  const token = Buffer.from(probeToken());
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket('udp4');
    let resend: NodeJS.Timeout | undefined;
    const finish = (settle: () => void): void => {
      clearTimeout(timer);
      clearInterval(resend);
      socket.close();
      settle();
    };
    const timer = setTimeout(() => finish(() => resolve('timeout')), options.timeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS);
    const send = (): void => socket.send(token);
    socket.on('error', (error: NodeJS.ErrnoException) => {
      const outcome = outcomeOfError(error);
      finish(() => (outcome === null ? reject(error) : resolve(outcome)));
    });
    socket.on('message', (message) => {
      if (message.equals(token)) finish(() => resolve('ok'));
    });
    // A connected socket hears ICMP errors (port unreachable comes back as ECONNREFUSED).
    socket.bind({ port: 0, ...(options.from === undefined ? {} : { address: options.from }) }, () => {
      socket.connect(options.port, options.to, () => {
        send();
        resend = setInterval(send, UDP_RESEND_MS);
      });
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Command line (see probe-main.ts)
// ---------------------------------------------------------------------------------------------

export type ProbeCommand =
  | { readonly kind: 'serve'; readonly tcp: readonly number[]; readonly udp: readonly number[]; readonly untilStdinCloses: boolean }
  | { readonly kind: 'connect'; readonly options: Required<Omit<ConnectOptions, 'from'>> & Pick<ConnectOptions, 'from'> };

const USAGE = 'usage: probe serve [--tcp P,P] [--udp P,P] [--until-stdin-closes] | probe connect --proto tcp|udp --to IP --port N [--timeout-ms MS] [--from IP]';

/** Parses the probe program's arguments; throws ProbeError with the usage on anything unexpected. */
export function parseProbeArgs(argv: readonly string[]): ProbeCommand {
  const [verb, ...rest] = argv;
  const flags = parseFlags(rest, verb === 'serve' ? ['--until-stdin-closes'] : []);
  if (verb === 'serve') {
    const tcp = parsePorts(flags.get('--tcp') ?? '');
    const udp = parsePorts(flags.get('--udp') ?? '');
    checkKnown(flags, ['--tcp', '--udp', '--until-stdin-closes']);
    if (tcp.length + udp.length === 0) throw new ProbeError(`serve: give --tcp and/or --udp ports; ${USAGE}`);
    return { kind: 'serve', tcp, udp, untilStdinCloses: flags.has('--until-stdin-closes') };
  }
  if (verb === 'connect') {
    checkKnown(flags, ['--proto', '--to', '--port', '--timeout-ms', '--from']);
    const proto = flags.get('--proto');
    if (proto !== 'tcp' && proto !== 'udp') throw new ProbeError(`connect: --proto must be tcp or udp; ${USAGE}`);
    const to = requireAddress(flags, '--to');
    const from = flags.has('--from') ? requireAddress(flags, '--from') : undefined;
    const port = parsePort(flags.get('--port') ?? '');
    const timeoutMs = flags.has('--timeout-ms') ? parsePositiveInt('--timeout-ms', flags.get('--timeout-ms') ?? '') : DEFAULT_PROBE_TIMEOUT_MS;
    return { kind: 'connect', options: { proto, to, port, timeoutMs, ...(from === undefined ? {} : { from }) } };
  }
  throw new ProbeError(USAGE);
}

function parseFlags(args: readonly string[], booleans: readonly string[]): Map<string, string> {
  const flags = new Map<string, string>();
  for (let i = 0; i < args.length; i++) {
    const flag = args[i] ?? '';
    if (!flag.startsWith('--')) throw new ProbeError(`unexpected argument "${flag}"; ${USAGE}`);
    if (booleans.includes(flag)) {
      flags.set(flag, 'true');
      continue;
    }
    const value = args[i + 1];
    if (value === undefined) throw new ProbeError(`${flag} needs a value; ${USAGE}`);
    flags.set(flag, value);
    i++;
  }
  return flags;
}

function checkKnown(flags: ReadonlyMap<string, string>, known: readonly string[]): void {
  for (const flag of flags.keys()) if (!known.includes(flag)) throw new ProbeError(`unknown flag ${flag}; ${USAGE}`);
}

function requireAddress(flags: ReadonlyMap<string, string>, flag: string): string {
  const value = flags.get(flag) ?? '';
  if (parseIPv4(value) === null) throw new ProbeError(`${flag}: "${value}" is not an IPv4 address`);
  return value;
}

function parsePorts(text: string): number[] {
  return text === '' ? [] : text.split(',').map(parsePort);
}

function parsePort(text: string): number {
  const port = parsePositiveInt('port', text);
  if (port > 65535) throw new ProbeError(`port ${port} is out of range`);
  return port;
}

function parsePositiveInt(what: string, text: string): number {
  if (!/^[1-9][0-9]{0,8}$/.test(text)) throw new ProbeError(`${what}: "${text}" is not a positive integer`);
  return Number(text);
}

/** The probe program. Resolves to the exit code once it is time to exit (never, for `serve`, until stopped). */
export async function probeMain(argv: readonly string[]): Promise<number> {
  let command: ProbeCommand;
  try {
    command = parseProbeArgs(argv);
  } catch (error) {
    process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
    return EXIT_ERROR;
  }
  return command.kind === 'serve' ? serveUntilStopped(command) : connectAndReport(command.options);
}

async function connectAndReport(options: ConnectOptions): Promise<number> {
  try {
    const outcome = await connectOnce(options);
    process.stdout.write(`${outcome}\n`);
    return outcome === 'ok' ? EXIT_OK : EXIT_NOT_REACHED;
  } catch (error) {
    process.stdout.write(`error: ${error instanceof Error ? error.message : String(error)}\n`);
    return EXIT_ERROR;
  }
}

async function serveUntilStopped(command: Extract<ProbeCommand, { kind: 'serve' }>): Promise<number> {
  let servers: EchoServers;
  try {
    servers = await startEchoServers({ tcp: command.tcp, udp: command.udp });
  } catch (error) {
    process.stderr.write(`cannot serve: ${error instanceof Error ? error.message : String(error)}\n`);
    return EXIT_ERROR;
  }
  process.stdout.write('ready\n');
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
    // Started by a controller that may die without stopping us: its end of the pipe closing is the signal.
    if (command.untilStdinCloses) {
      process.stdin.on('data', () => {});
      process.stdin.once('end', resolve);
      process.stdin.once('error', () => resolve());
    }
  });
  await servers.close();
  return EXIT_OK;
}

// ---------------------------------------------------------------------------------------------
// Host side: run the probe program inside network namespaces
// ---------------------------------------------------------------------------------------------

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
    const ipArgs = ['netns', 'exec', netns.name, process.execPath, PROBE_ENTRY, ...args];
    const argv = ['ip', ...ipArgs];
    // Its own process group, so stop() reaches it with one signal; stdin stays a pipe it watches.
    const child = spawn('ip', ipArgs, { stdio: ['pipe', 'pipe', 'pipe'], detached: true, env: { ...process.env, LC_ALL: 'C' } });
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

function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // Already gone.
  }
}
