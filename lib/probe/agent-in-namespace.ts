/**
 * Host side of the agent: a long-running probe agent inside a network namespace, spoken to with the
 * protocol of agent-protocol.ts.
 */
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { formatArgv } from '../exec.js';
import type { NetworkNamespace } from '../netns.js';
import { AGENT_UDP_SOURCE_PORTS } from './agent-protocol.js';
import type { AgentRequest, AgentResponse } from './agent-protocol.js';
import { DEFAULT_PROBE_TIMEOUT_MS, PROBE_OUTCOMES, ProbeError } from './echo.js';
import type { EchoServerOptions, ProbeOutcome } from './echo.js';
import { PROBE_ENTRY, SERVER_READY_TIMEOUT_MS, SERVER_STOP_GRACE_MS, signalGroup } from './in-namespace.js';

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
    const argv = [
      process.execPath, PROBE_ENTRY, 'agent',
      ...(tcp.length > 0 ? ['--tcp', tcp.join(',')] : []),
      ...(udp.length > 0 ? ['--udp', udp.join(',')] : []),
      '--udp-source-ports', `${range[0]}-${range[1]}`,
    ];
    const child = netns.spawn(argv, { stdin: 'pipe', ownGroup: true });
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
