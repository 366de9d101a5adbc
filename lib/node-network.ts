/**
 * What the node's own network says, read with iproute2: its links, its local addresses, and the
 * host routes that lead to pods' interfaces. The VPC CNI keeps in these alone what no Kubernetes
 * object holds: the addresses of a multi-NIC pod's further interfaces, the interfaces of pods wired
 * in ways palisade was not told about, and whether kube-proxy runs in IPVS mode (its kube-ipvs0 link).
 *
 * NodeNetworkWatcher follows `ip monitor` and reads everything again after each burst of changes: the
 * monitor's text is only a trigger, the JSON reads are what counts, so no event format is parsed.
 * Should the monitor die, the watcher starts it again after a pause, and reads once more meanwhile.
 */
import type { CommandRunner, FollowedProgram } from './exec.js';
import { formatArgv } from './exec.js';
import { PalisadeError } from './errors.js';
import type { Logger } from './logger.js';

export interface HostRoute {
  /** The one IPv4 address the route leads to. */
  readonly address: string;
  readonly iface: string;
  /** The routing table: "main", or another name or number (the VPC CNI's per-ENI and per-VLAN tables). */
  readonly table: string;
}

export interface NodeNetwork {
  readonly links: readonly string[];
  /** Every IPv4 address held by one of the node's interfaces: what `addrtype LOCAL` matches (127/8 aside). */
  readonly localAddresses: readonly string[];
  /** Routes of one address straight to an interface (scope link, no gateway), from every table. */
  readonly hostRoutes: readonly HostRoute[];
}

const ADDR_ARGV = ['ip', '-j', 'addr', 'show'] as const;
const ROUTE_ARGV = ['ip', '-j', '-4', 'route', 'show', 'table', 'all'] as const;
const MONITOR_ARGV = ['ip', 'monitor', 'link', 'address', 'route'] as const;

async function readJson(runner: CommandRunner, argv: readonly string[]): Promise<unknown[]> {
  const result = await runner.exec(argv, { timeoutMs: 10_000 });
  if (result.code !== 0) throw new PalisadeError('NODE_NETWORK', `${formatArgv(argv)} on ${runner.describe()} exited ${result.code}: ${result.stderr.trim() || '(no output)'}`);
  try {
    const parsed: unknown = JSON.parse(result.stdout === '' ? '[]' : result.stdout);
    if (!Array.isArray(parsed)) throw new Error('not a JSON array');
    return parsed;
  } catch (error) {
    throw new PalisadeError('NODE_NETWORK', `${formatArgv(argv)} on ${runner.describe()} printed what is not its JSON: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  }
}

function field(entry: unknown, name: string): unknown {
  return typeof entry === 'object' && entry !== null ? (entry as Record<string, unknown>)[name] : undefined;
}

function text(entry: unknown, name: string): string | undefined {
  const value = field(entry, name);
  return typeof value === 'string' ? value : undefined;
}

/** The address a route leads to when it is one address: "10.0.0.1" or "10.0.0.1/32". */
function singleAddress(dst: string | undefined): string | null {
  if (dst === undefined) return null;
  const match = /^(\d{1,3}(?:\.\d{1,3}){3})(?:\/32)?$/.exec(dst);
  return match === null ? null : match[1]!;
}

export async function readNodeNetwork(runner: CommandRunner): Promise<NodeNetwork> {
  const [addresses, routes] = await Promise.all([readJson(runner, ADDR_ARGV), readJson(runner, ROUTE_ARGV)]);
  const links: string[] = [];
  const local = new Set<string>();
  for (const link of addresses) {
    const name = text(link, 'ifname');
    if (name !== undefined) links.push(name);
    const info = field(link, 'addr_info');
    for (const address of Array.isArray(info) ? info : []) {
      const value = text(address, 'local');
      if (text(address, 'family') === 'inet' && value !== undefined) local.add(value);
    }
  }
  const hostRoutes: HostRoute[] = [];
  for (const route of routes) {
    const type = text(route, 'type') ?? 'unicast';
    const address = singleAddress(text(route, 'dst'));
    const iface = text(route, 'dev');
    if (type !== 'unicast' || address === null || iface === undefined || text(route, 'gateway') !== undefined || text(route, 'scope') !== 'link') continue;
    hostRoutes.push({ address, iface, table: text(route, 'table') ?? 'main' });
  }
  return { links: links.sort(), localAddresses: [...local].sort(), hostRoutes };
}

/** The host routes as the compiler takes them: each interface with the addresses routed to it. */
export function routesByInterface(network: NodeNetwork): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const route of network.hostRoutes) {
    const list = out.get(route.iface);
    if (list === undefined) out.set(route.iface, [route.address]);
    else if (!list.includes(route.address)) list.push(route.address);
  }
  return out;
}

export interface NodeNetworkWatcherOptions {
  readonly runner: CommandRunner;
  readonly logger: Logger;
  /** Called with every read that differs from the one before. */
  readonly onChange: (network: NodeNetwork) => void;
  /** Called when a read fails; the watcher keeps trying. */
  readonly onError?: (error: unknown) => void;
  /** Changes are gathered this long before one read: a pod's veth, address and routes come in a burst. */
  readonly settleMs?: number;
  /** Read again this often even without events, in case one was missed. */
  readonly resyncMs?: number;
}

export class NodeNetworkWatcher {
  private readonly options: NodeNetworkWatcherOptions;
  private monitor: FollowedProgram | null = null;
  private stopped = false;
  private timer: NodeJS.Timeout | null = null;
  private resync: NodeJS.Timeout | null = null;
  private reading: Promise<void> | null = null;
  private again = false;
  private last = '';
  /** The latest successful read; null until the first. */
  current: NodeNetwork | null = null;
  lastError: string | null = null;

  constructor(options: NodeNetworkWatcherOptions) {
    this.options = options;
  }

  start(): void {
    this.startMonitor();
    this.resync = setInterval(() => this.schedule(0), this.options.resyncMs ?? 60_000);
    this.resync.unref();
    this.schedule(0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    if (this.resync !== null) clearInterval(this.resync);
    this.monitor?.stop();
    await this.reading;
  }

  /** Resolves once no read is running or due now (for tests). */
  async idle(): Promise<void> {
    while (this.reading !== null || this.timer !== null) await (this.reading ?? new Promise((resolve) => setTimeout(resolve, 5)));
  }

  private startMonitor(): void {
    if (this.stopped) return;
    const monitor = this.options.runner.follow(MONITOR_ARGV, () => this.schedule(this.options.settleMs ?? 50));
    this.monitor = monitor;
    void monitor.exited.then((code) => {
      if (this.stopped) return;
      this.options.logger.warn({ code, command: formatArgv(MONITOR_ARGV) }, 'the node network monitor exited; starting it again in 5 s');
      // Whatever changed while it was gone is picked up by a read.
      this.schedule(0);
      setTimeout(() => this.startMonitor(), 5_000).unref();
    });
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    if (this.reading !== null) {
      this.again = true;
      return;
    }
    if (this.timer !== null) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.reading = this.read().finally(() => {
        this.reading = null;
        if (this.again) {
          this.again = false;
          this.schedule(0);
        }
      });
    }, delayMs);
  }

  private async read(): Promise<void> {
    try {
      const network = await readNodeNetwork(this.options.runner);
      this.lastError = null;
      const text = JSON.stringify(network);
      if (text === this.last) return;
      this.last = text;
      this.current = network;
      this.options.onChange(network);
    } catch (error) {
      this.lastError = error instanceof Error ? error.message : String(error);
      this.options.onError?.(error);
      // Retried soon, without waiting for an event that may never come.
      if (!this.stopped) setTimeout(() => this.schedule(0), 2_000).unref();
    }
  }
}
