/**
 * The probe program that runs inside network namespaces (entry point: ../probe-main.ts), started with
 * the project's own node (process.execPath):
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
 */
import { createInterface } from 'node:readline';
import { parseIPv4 } from '../../rules/ipv4.js';
import { AGENT_UDP_SOURCE_PORTS, parseAgentRequest } from './agent-protocol.js';
import type { AgentRequest, AgentResponse } from './agent-protocol.js';
import { connectOnce, DEFAULT_PROBE_TIMEOUT_MS, ProbeError, startEchoServers } from './echo.js';
import type { ConnectOptions, EchoServers } from './echo.js';

/** Exit codes of the probe program. */
export const EXIT_OK = 0;
export const EXIT_NOT_REACHED = 1;
export const EXIT_ERROR = 2;

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

// The agent: echo servers plus probes on request, one JSON line each way (agent-protocol.ts).

/** How many ports to try when one is taken before calling the probe failed. */
const AGENT_BIND_ATTEMPTS = 50;

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
