import { PalisadeError } from '../../lib/errors.js';
import type { Lab } from '../../lib/lab/cluster.js';
import type { PodHandle } from '../../lib/pod-network.js';
import { probe, ProbeServer } from '../../lib/probe/in-namespace.js';
import { describeError } from './format.js';
import type { Interruption } from './interrupt.js';
import { DEMO_NAMESPACE, DEMO_NODE, ECHO_PORT } from './script.js';
import type { DemoPod, DemoPodSpec } from './script.js';

/** A probe that has not had its echo back by then counts as blocked (policies drop, they do not reject). */
export const PROBE_TIMEOUT_MS = 500;

/** The tutorial's pods on the lab node, each with an echo server, and the "ping" between them. */
export class DemoPods {
  /** Whether "ping" is real ICMP ping; else a TCP echo round trip to the target's echo server. */
  readonly useIcmp: boolean;
  private readonly interruption: Interruption;
  private readonly servers: ProbeServer[] = [];
  private readonly handles = new Map<DemoPod, PodHandle>();

  constructor(interruption: Interruption, useIcmp: boolean) {
    this.interruption = interruption;
    this.useIcmp = useIcmp;
  }

  /** Wires the pod on the node and starts its echo server. */
  async start(lab: Lab, spec: DemoPodSpec): Promise<PodHandle> {
    const handle = await lab.addPod(DEMO_NODE.name, { namespace: DEMO_NAMESPACE, name: spec.name, ip: spec.ip });
    this.handles.set(spec.name, handle);
    this.interruption.checkpoint();
    this.servers.push(await ProbeServer.start(handle.netns, { tcp: [ECHO_PORT], udp: [] }));
    this.interruption.checkpoint();
    return handle;
  }

  ip(name: DemoPod): string {
    return this.handle(name).spec.ip;
  }

  async reachable(from: DemoPod, to: DemoPod): Promise<boolean> {
    const source = this.handle(from);
    const target = this.ip(to);
    if (!this.useIcmp) return probe(source, target, 'tcp', ECHO_PORT, { timeoutMs: PROBE_TIMEOUT_MS });
    const result = await source.netns.exec(['ping', '-c1', '-W1', target], { timeoutMs: 10_000 });
    if (result.code === 0) return true;
    if (result.code === 1) return false;
    throw new PalisadeError('DEMO', `ping in ${source.netns.name} failed (exit ${result.code}): ${result.stderr.trim()}`);
  }

  /** Stops every echo server started; what went wrong doing so. */
  async stopEchoServers(): Promise<string[]> {
    const problems: string[] = [];
    for (const server of this.servers.splice(0)) await server.stop().catch((e: unknown) => problems.push(`stopping an echo server: ${describeError(e)}`));
    return problems;
  }

  private handle(name: DemoPod): PodHandle {
    const handle = this.handles.get(name);
    if (handle === undefined) throw new PalisadeError('DEMO', `pod ${name} has not been created`);
    return handle;
  }
}
