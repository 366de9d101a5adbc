import { randomBytes } from 'node:crypto';
import { PalisadeError } from '../../lib/errors.js';
import { spawnCollect } from '../../lib/exec.js';
import { Lab } from '../../lib/lab/cluster.js';
import { removeStaleNamespaces } from '../../lib/netns.js';
import { describeError, seconds } from './format.js';
import type { Out } from './format.js';
import type { Interruption } from './interrupt.js';
import { readStatus, STATUS_ADDRESS } from './node-status.js';
import type { Obj } from './objects.js';
import type { DemoPods } from './pods.js';
import { DEMO_NODE } from './script.js';

const READY_DEADLINE_MS = 20_000;

/**
 * The demo's lab: one EKS node of network namespaces, its lab API server and a real palisade daemon.
 * Set up once; torn down, with everything this run created, whatever happened in between.
 */
export class DemoLab {
  /** Every namespace of this run starts with it, so a final sweep can only ever touch this run's. */
  private readonly prefix = `paldemo-${randomBytes(2).toString('hex')}`;
  private readonly out: Out;
  private readonly interruption: Interruption;
  private readonly pods: DemoPods;
  private lab: Lab | null = null;
  private teardownDone: Promise<boolean> | null = null;

  constructor(out: Out, interruption: Interruption, pods: DemoPods) {
    this.out = out;
    this.interruption = interruption;
    this.pods = pods;
  }

  /** Builds the node, creates `namespace` in its API server and starts the daemon, until it is ready. */
  async setUp(namespace: Obj): Promise<void> {
    this.out('Setting up (in place of: helm install calico projectcalico/tigera-operator)');
    const started = performance.now();
    // One node: the lab API server listens on the node's loopback, where its daemon reaches it.
    this.lab = await Lab.create({
      prefix: this.prefix,
      nodes: [{ name: DEMO_NODE.name, address: '127.0.0.1', podCidr: DEMO_NODE.podCidr }],
      // Discovery asked every 2 s rather than 30, so the step installing the ClusterNetworkPolicy CRD takes effect at once.
      daemonArgs: ['--iptables-backend', 'nft', '--cluster-policy-discovery-interval', '2s'],
    });
    const lab = this.lab;
    this.interruption.checkpoint();
    const node = lab.node(DEMO_NODE.name);
    this.out(`  node ${DEMO_NODE.name}: network namespace ${node.netns.name}; pods get ${DEMO_NODE.podCidr}, wired like the AWS VPC CNI (an eni… veth each, gateway 169.254.1.1)`);
    this.out('  lab API server inside the node on 127.0.0.1:6443: every kubectl below is a call to it');
    await lab.api.apply(namespace);
    this.interruption.checkpoint();
    const daemon = await lab.startDaemon(DEMO_NODE.name);
    await this.waitReady();
    const status = await readStatus(this.requireLab());
    this.out(`  palisade daemon on ${DEMO_NODE.name}: pid ${daemon.child.pid ?? '?'}, ready (iptables ${status.backend?.name ?? '?'}); status endpoint ${STATUS_ADDRESS} on the node`);
    this.out(`  lab ready in ${seconds(performance.now() - started)}`);
  }

  requireLab(): Lab {
    if (this.lab === null) throw new PalisadeError('DEMO', 'the lab is not set up');
    return this.lab;
  }

  printDaemonLog(): void {
    const lines = this.lab?.node(DEMO_NODE.name).daemon?.lines ?? [];
    if (lines.length === 0) return;
    this.out('  last lines of the daemon log:');
    for (const line of lines.slice(-15)) this.out(`    ${line}`);
  }

  /** Stops everything and deletes every namespace of this run; safe to call more than once. Whether all went. */
  teardown(): Promise<boolean> {
    this.teardownDone ??= this.doTeardown();
    return this.teardownDone;
  }

  private async waitReady(): Promise<void> {
    const lab = this.requireLab();
    const deadline = performance.now() + READY_DEADLINE_MS;
    for (;;) {
      this.interruption.checkpoint();
      if ((await lab.status(DEMO_NODE.name, '/readyz')).status === 200) return;
      if (performance.now() > deadline) throw new PalisadeError('DEMO', `the daemon did not become ready within ${READY_DEADLINE_MS} ms`);
      await this.interruption.sleep(50);
    }
  }

  private async doTeardown(): Promise<boolean> {
    const problems: string[] = await this.pods.stopEchoServers();
    const lab = this.lab;
    this.lab = null;
    if (lab !== null) await lab.destroy().catch((e: unknown) => problems.push(`deleting the lab: ${describeError(e)}`));
    // Anything of this run a failure left behind (the prefix is this run's alone).
    const stale = await removeStaleNamespaces(this.prefix).catch((e: unknown) => {
      problems.push(`sweeping ${this.prefix}-*: ${describeError(e)}`);
      return [];
    });
    if (stale.length > 0) problems.push(`had to sweep leftover namespaces: ${stale.join(', ')}`);
    const left = await remainingNamespaces(this.prefix);
    this.out();
    for (const problem of problems) this.out(`  cleanup: ${problem}`);
    if (left.length > 0) {
      this.out(`✘ cleanup left network namespaces behind: ${left.join(', ')} (delete them with: ip netns del NAME)`);
      return false;
    }
    this.out(`cleaned up: daemon, lab API server, echo servers and every ${this.prefix}-* network namespace are gone`);
    return true;
  }
}

async function remainingNamespaces(prefix: string): Promise<string[]> {
  const result = await spawnCollect(['ip', 'netns', 'list'], {});
  return result.stdout.split('\n').map((line) => line.trim().split(/\s+/)[0] ?? '').filter((name) => name.startsWith(`${prefix}-`));
}
