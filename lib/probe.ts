/**
 * A tiny TCP/UDP echo server and client for proving what a firewall lets through, and the host-side
 * helpers that run them inside network namespaces with the project's own node (process.execPath):
 *
 *   node dist/lib/probe-main.js serve --tcp 80,81 --udp 80,81 [--until-stdin-closes]
 *       binds 0.0.0.0 on every port, echoes everything, prints "ready" once all are bound
 *   node dist/lib/probe-main.js connect --proto tcp|udp --to IP --port N [--timeout-ms 1000] [--from IP]
 *       one echo round trip; prints ok | timeout | refused | unreachable (exit 0 only for ok),
 *       or "error: ..." (exit 2) when the probe itself could not run
 *   node dist/lib/probe-main.js agent [--tcp 80,81] [--udp 80,81] [--udp-source-ports 10000-32000]
 *       serves like `serve` (no ports is fine: a client-only agent), prints "ready", then reads one JSON
 *       probe request a line from stdin, {"id":1,"proto":"tcp","to":"10.1.1.1","port":80,"timeoutMs":800
 *       [,"from":"IP"]}, runs them all concurrently and answers each with a line {"id":1,"outcome":"ok",
 *       "ms":3} or {"id":1,"error":"..."}; exits when stdin closes. A UDP request may name its
 *       "sourcePort"; otherwise the agent takes the next of its --udp-source-ports. One long-running agent per namespace
 *       probes a whole reachability matrix in about one timeout, where `connect` costs a node start each.
 *       UDP probes of an agent bind source ports in sequence, never reusing one, so a probe can never
 *       ride on the conntrack entry of an earlier, allowed probe with the same addresses and ports.
 *       Its UDP echoes leave from the address they were sent to (every address present at start gets
 *       its own socket), so multi-homed namespaces (a node, a host with two addresses) answer UDP too.
 *
 * A probe that cannot run never reads as "blocked": the host-side helpers throw instead.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import { networkInterfaces } from 'node:os';
import { createInterface } from 'node:readline';
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
  /**
   * UDP on a host with several addresses: besides the wildcard socket, bind one socket per local IPv4
   * address present at start, so an echo leaves from the address the datagram was sent to (a wildcard
   * socket replies from the routing's preferred source, which a connected client ignores).
   */
  readonly udpPerAddress?: boolean;
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
    const perAddress = options.udpPerAddress === true && host === '0.0.0.0';
    const addresses = perAddress ? localIPv4Addresses() : [];
    for (const port of options.udp) {
      closers.push(await bindUdpEcho(host, port, perAddress));
      for (const address of addresses) closers.push(await bindUdpEcho(address, port, true));
    }
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

/** Every IPv4 address of this network namespace, each once (169.254.1.1 sits on every host veth of a node). */
function localIPv4Addresses(): string[] {
  const out = new Set<string>();
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) if (a.family === 'IPv4') out.add(a.address);
  return [...out];
}

/** With reuseAddr, the wildcard and per-address sockets share the port; the kernel picks the most specific. */
async function bindUdpEcho(host: string, port: number, reuseAddr = false): Promise<() => Promise<void>> {
  const socket = dgram.createSocket({ type: 'udp4', reuseAddr });
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
  /** UDP only: the source port to bind (default: any). The agent uses it to never reuse a port. */
  readonly localPort?: number;
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
    socket.bind({ port: options.localPort ?? 0, ...(options.from === undefined ? {} : { address: options.from }) }, () => {
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
  | { readonly kind: 'connect'; readonly options: Required<Omit<ConnectOptions, 'from' | 'localPort'>> & Pick<ConnectOptions, 'from'> }
  | { readonly kind: 'agent'; readonly tcp: readonly number[]; readonly udp: readonly number[]; readonly udpSourcePorts: readonly [number, number] };

const USAGE = 'usage: probe serve [--tcp P,P] [--udp P,P] [--until-stdin-closes] | probe connect --proto tcp|udp --to IP --port N [--timeout-ms MS] [--from IP] | probe agent [--tcp P,P] [--udp P,P] [--udp-source-ports FIRST-LAST]';

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
  if (verb === 'agent') {
    checkKnown(flags, ['--tcp', '--udp', '--udp-source-ports']);
    let udpSourcePorts = AGENT_UDP_SOURCE_PORTS;
    const range = flags.get('--udp-source-ports');
    if (range !== undefined) {
      const [first, last, ...rest] = range.split('-').map(parsePort);
      if (first === undefined || last === undefined || rest.length > 0 || last < first) throw new ProbeError(`--udp-source-ports: "${range}" is not FIRST-LAST; ${USAGE}`);
      udpSourcePorts = [first, last];
    }
    return { kind: 'agent', tcp: parsePorts(flags.get('--tcp') ?? ''), udp: parsePorts(flags.get('--udp') ?? ''), udpSourcePorts };
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
  switch (command.kind) {
    case 'serve':
      return serveUntilStopped(command);
    case 'agent':
      return runAgent(command);
    case 'connect':
      return connectAndReport(command.options);
  }
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
// Agent: echo servers plus probes on request, one JSON line each way
// ---------------------------------------------------------------------------------------------

/** One probe request to an agent. */
export interface AgentRequest {
  readonly proto: ProbeProtocol;
  readonly to: string;
  readonly port: number;
  readonly timeoutMs?: number;
  /** Source address to bind (the namespace must hold it). */
  readonly from?: string;
  /** UDP only: the source port to send from, instead of the agent's next one. */
  readonly sourcePort?: number;
}

/** An agent's answer: the outcome, or why the probe could not run. */
export type AgentResponse =
  | { readonly id: number; readonly outcome: ProbeOutcome; readonly ms: number }
  | { readonly id: number; readonly error: string };

/**
 * UDP source ports an agent hands out in turn by default. Every UDP probe binds its port explicitly, so
 * the whole port space is the agent's; this default stays below the kernel's ephemeral range.
 */
export const AGENT_UDP_SOURCE_PORTS: readonly [number, number] = [10_000, 32_000];
/** How many ports to try when one is taken before calling the probe failed. */
const AGENT_BIND_ATTEMPTS = 50;
/** The longest timeout a request may ask for. */
const AGENT_MAX_TIMEOUT_MS = 60_000;

/** Checks a request line; returns the id (null when even that is unusable) and the request or the problem. */
export function parseAgentRequest(line: string): { id: number | null; request: AgentRequest | null; problem: string | null } {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return { id: null, request: null, problem: 'not JSON' };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return { id: null, request: null, problem: 'not a JSON object' };
  const object = value as Record<string, unknown>;
  const id = Number.isSafeInteger(object['id']) ? (object['id'] as number) : null;
  const fail = (problem: string) => ({ id, request: null, problem });
  if (id === null) return fail('id must be an integer');
  const { proto, to, port, timeoutMs, from, sourcePort } = object;
  if (proto !== 'tcp' && proto !== 'udp') return fail('proto must be tcp or udp');
  if (typeof to !== 'string' || parseIPv4(to) === null) return fail('to must be an IPv4 address');
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) return fail('port must be 1 to 65535');
  if (timeoutMs !== undefined && (typeof timeoutMs !== 'number' || !Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > AGENT_MAX_TIMEOUT_MS)) {
    return fail(`timeoutMs must be 1 to ${AGENT_MAX_TIMEOUT_MS}`);
  }
  if (from !== undefined && (typeof from !== 'string' || parseIPv4(from) === null)) return fail('from must be an IPv4 address');
  if (sourcePort !== undefined && (proto !== 'udp' || typeof sourcePort !== 'number' || !Number.isInteger(sourcePort) || sourcePort < 1 || sourcePort > 65535)) {
    return fail('sourcePort must be 1 to 65535, and is for UDP only');
  }
  return {
    id,
    problem: null,
    request: { proto, to, port, ...(timeoutMs === undefined ? {} : { timeoutMs }), ...(from === undefined ? {} : { from }), ...(sourcePort === undefined ? {} : { sourcePort }) },
  };
}

async function runAgent(command: Extract<ProbeCommand, { kind: 'agent' }>): Promise<number> {
  let servers: EchoServers;
  try {
    servers = await startEchoServers({ tcp: command.tcp, udp: command.udp, udpPerAddress: true });
  } catch (error) {
    process.stderr.write(`cannot serve: ${error instanceof Error ? error.message : String(error)}\n`);
    return EXIT_ERROR;
  }
  const served = new Set(command.udp);
  const [firstPort, lastPort] = command.udpSourcePorts;
  let nextPort = firstPort;
  const takePort = (): number => {
    for (;;) {
      const port = nextPort;
      nextPort = nextPort >= lastPort ? firstPort : nextPort + 1;
      if (!served.has(port)) return port;
    }
  };
  const answer = (response: AgentResponse): void => {
    process.stdout.write(`${JSON.stringify(response)}\n`);
  };
  const run = async (id: number, request: AgentRequest): Promise<void> => {
    const started = performance.now();
    for (let attempt = 1; ; attempt++) {
      try {
        const { sourcePort, ...connect } = request;
        const outcome = await connectOnce({ ...connect, ...(request.proto === 'udp' ? { localPort: sourcePort ?? takePort() } : {}) });
        answer({ id, outcome, ms: Math.round(performance.now() - started) });
        return;
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code === 'EADDRINUSE' && request.sourcePort === undefined && attempt < AGENT_BIND_ATTEMPTS) continue;
        answer({ id, error: error instanceof Error ? error.message : String(error) });
        return;
      }
    }
  };
  process.stdout.write('ready\n');
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
    const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
    lines.on('line', (line) => {
      if (line.trim() === '') return;
      const { id, request, problem } = parseAgentRequest(line);
      if (request === null || id === null) answer({ id: id ?? -1, error: `bad request: ${problem ?? 'unknown'}: ${line.slice(0, 200)}` });
      else void run(id, request);
    });
    lines.once('close', resolve);
    process.stdin.once('error', () => resolve());
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

/** Beyond a request's own timeout, how long the agent may take to answer before it is called stuck. */
const AGENT_ANSWER_ALLOWANCE_MS = 10_000;

interface PendingProbe {
  readonly resolve: (outcome: ProbeOutcome) => void;
  readonly reject: (error: Error) => void;
  readonly timer: NodeJS.Timeout;
  readonly request: AgentRequest;
}

/**
 * A long-running `agent` inside a namespace: it serves like ProbeServer and runs probes on request,
 * concurrently, at the cost of a JSON line instead of a node start. stop() it in teardown; it also
 * exits by itself when this process dies (its stdin closes).
 *
 *   const agent = await ProbeAgent.start(pod.netns, { tcp: [80, 81], udp: [80, 81] });
 *   const outcome = await agent.probe({ proto: 'udp', to: '10.1.1.2', port: 80, timeoutMs: 800 });
 */
export class ProbeAgent {
  readonly netns: NetworkNamespace;
  readonly tcp: readonly number[];
  readonly udp: readonly number[];
  private readonly child: ChildProcess;
  private readonly exited: Promise<void>;
  private readonly pending = new Map<number, PendingProbe>();
  private readonly stderr: string[] = [];
  private nextId = 1;
  private closed = false;
  /**
   * Round trips that came back, and the slowest of them (ms, inside the agent): how much timeout
   * headroom there is; and how many UDP probes took the agent's next source port (from the first of its range).
   */
  readonly stats = { ok: 0, maxOkMs: 0, udpAutoPorts: 0 };
  /** The range the agent takes UDP source ports from. */
  readonly udpSourcePorts: readonly [number, number];

  private constructor(netns: NetworkNamespace, ports: Partial<EchoServerOptions>, udpSourcePorts: readonly [number, number], child: ChildProcess, exited: Promise<void>) {
    this.netns = netns;
    this.tcp = [...(ports.tcp ?? [])];
    this.udp = [...(ports.udp ?? [])];
    this.udpSourcePorts = udpSourcePorts;
    this.child = child;
    this.exited = exited;
  }

  /** Starts `agent` in the namespace and waits for "ready". */
  static async start(netns: NetworkNamespace, ports: Partial<EchoServerOptions> = {}, options: { udpSourcePorts?: readonly [number, number] } = {}): Promise<ProbeAgent> {
    const tcp = ports.tcp ?? [];
    const udp = ports.udp ?? [];
    const range = options.udpSourcePorts ?? AGENT_UDP_SOURCE_PORTS;
    const ipArgs = [
      'netns', 'exec', netns.name, process.execPath, PROBE_ENTRY, 'agent',
      ...(tcp.length > 0 ? ['--tcp', tcp.join(',')] : []),
      ...(udp.length > 0 ? ['--udp', udp.join(',')] : []),
      '--udp-source-ports', `${range[0]}-${range[1]}`,
    ];
    const argv = ['ip', ...ipArgs];
    const child = spawn('ip', ipArgs, { stdio: ['pipe', 'pipe', 'pipe'], detached: true, env: { ...process.env, LC_ALL: 'C' } });
    const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
    const agent = new ProbeAgent(netns, { tcp, udp }, range, child, exited);
    try {
      await agent.listen(argv);
    } catch (error) {
      await agent.stop();
      throw error;
    }
    return agent;
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Probes in flight. */
  get inFlight(): number {
    return this.pending.size;
  }

  /** One round trip from the agent's namespace. Rejects with ProbeError when the probe could not run. */
  probe(request: AgentRequest): Promise<ProbeOutcome> {
    if (this.closed) return Promise.reject(new ProbeError(`probe agent in ${this.netns.name} has exited; stderr: ${this.stderrText()}`));
    const id = this.nextId++;
    const timeoutMs = request.timeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS;
    if (request.proto === 'udp' && request.sourcePort === undefined) this.stats.udpAutoPorts++;
    return new Promise<ProbeOutcome>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new ProbeError(`probe agent in ${this.netns.name} did not answer ${describeRequest(request)} within ${timeoutMs + AGENT_ANSWER_ALLOWANCE_MS} ms`));
      }, timeoutMs + AGENT_ANSWER_ALLOWANCE_MS);
      this.pending.set(id, { resolve, reject, timer, request });
      this.child.stdin?.write(`${JSON.stringify({ id, ...request, timeoutMs })}\n`);
    });
  }

  /** Closes its stdin, signals it, kills it after a grace period; resolves once it has exited. Probes in flight fail. */
  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.stdin?.end();
      signalGroup(this.child, 'SIGTERM');
      const grace = setTimeout(() => signalGroup(this.child, 'SIGKILL'), SERVER_STOP_GRACE_MS);
      await this.exited;
      clearTimeout(grace);
    }
    this.failAll('probe agent stopped');
  }

  private listen(argv: readonly string[]): Promise<void> {
    return new Promise((resolve, reject) => {
      let ready = false;
      const fail = (why: string): void => {
        clearTimeout(timer);
        reject(new ProbeError(`${formatArgv(argv)} ${why}; stderr: ${this.stderrText()}`));
      };
      const timer = setTimeout(() => fail(`did not print "ready" within ${SERVER_READY_TIMEOUT_MS} ms`), SERVER_READY_TIMEOUT_MS);
      this.child.stderr?.setEncoding('utf8');
      this.child.stderr?.on('data', (chunk: string) => {
        this.stderr.push(chunk);
        if (this.stderr.length > 50) this.stderr.shift();
      });
      this.child.stdin?.on('error', () => {});
      this.child.once('error', (error) => fail(`could not start: ${error.message}`));
      this.child.once('close', (code, signal) => {
        this.closed = true;
        if (!ready) fail(`exited (${signal ?? `code ${code}`}) before it was ready`);
        this.failAll(`probe agent in ${this.netns.name} exited (${signal ?? `code ${code}`})`);
      });
      const lines = createInterface({ input: this.child.stdout!, crlfDelay: Infinity });
      lines.on('line', (line) => {
        if (!ready) {
          if (line === 'ready') {
            ready = true;
            clearTimeout(timer);
            resolve();
          }
          return;
        }
        this.settle(line);
      });
    });
  }

  private settle(line: string): void {
    let response: AgentResponse;
    try {
      response = JSON.parse(line) as AgentResponse;
    } catch {
      return;
    }
    const pending = this.pending.get(response.id);
    if (pending === undefined) return;
    this.pending.delete(response.id);
    clearTimeout(pending.timer);
    if ('outcome' in response && response.outcome === 'ok') {
      this.stats.ok++;
      this.stats.maxOkMs = Math.max(this.stats.maxOkMs, response.ms);
    }
    if ('outcome' in response && PROBE_OUTCOMES.includes(response.outcome)) pending.resolve(response.outcome);
    else pending.reject(new ProbeError(`probe agent in ${this.netns.name}: ${describeRequest(pending.request)}: ${'error' in response ? response.error : line}`));
  }

  private failAll(why: string): void {
    for (const [id, pending] of this.pending) {
      clearTimeout(pending.timer);
      this.pending.delete(id);
      pending.reject(new ProbeError(`${why} with ${describeRequest(pending.request)} in flight; stderr: ${this.stderrText()}`));
    }
  }

  private stderrText(): string {
    return this.stderr.join('').trim() || '(none)';
  }
}

function describeRequest(request: AgentRequest): string {
  return `${request.proto} ${request.from === undefined ? '' : `${request.from} `}-> ${request.to}:${request.port}`;
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
