import type { ApiClient } from '../lib/kube/api-client.js';
import type { Dataplane } from '../rules/dataplane.js';
import { Names } from '../rules/names.js';
import type { CommandRunner } from '../lib/exec.js';
import type { Logger } from '../lib/logger.js';
import { Reflector } from '../lib/kube/reflector.js';
import type { ReflectorHandler } from '../lib/kube/reflector.js';
import { ApiRequestError } from '../lib/kube/api-client.js';
import { servesResource } from '../lib/kube/discovery.js';
import { CLUSTER_POLICIES_PATH, KubeClusterPolicyStatusSink } from '../lib/kube/cluster-policy-status.js';
import { CLUSTER_POLICY_API_VERSION } from '../rules/cluster-policy.js';
import { ClusterPolicyWatch } from './cluster-policy-watch.js';
import { ConditionWriter } from './cluster-policy-status-writer.js';
import { conditionReports } from './cluster-policy-conditions.js';
import { Iptables } from '../lib/iptables/iptables.js';
import { detectBackend } from '../lib/iptables/backend.js';
import type { BackendDecision } from '../lib/iptables/backend.js';
import { Ipset } from '../lib/ipset.js';
import { DataplaneApplier } from '../lib/dataplane/applier.js';
import { Conntrack } from '../lib/conntrack.js';
import { FlowForgetter } from './flow-forgetter.js';
import type { DropCounters } from '../lib/dataplane/applier.js';
import type { DaemonConfig, ListenAddress } from './config.js';
import type { Clock } from './clock.js';
import { realClock } from './clock.js';
import { ClusterCache } from './cluster-cache.js';
import type { ResourceKind } from './cluster-cache.js';
import { DaemonMetrics } from './metrics.js';
import { SyncLoop } from './sync-loop.js';
import { buildStatus } from './status.js';
import type { SyncState } from './status.js';
import { HttpServer, text } from './http-server.js';
import { statusRoutes } from './status-routes.js';
import { NodeNetworkWatcher, routesByInterface } from '../lib/node-network.js';
import type { NodeNetwork } from '../lib/node-network.js';
import { checkNodeNetwork } from './node-checks.js';
import type { NodeFindings } from './node-checks.js';
import { DropLog } from './drop-log.js';
import type { LogCounter } from './drop-log.js';
import type { NflogReader, NflogReaderEvents } from '../lib/drop-log/nflog-packet.js';
import { UlogdReader } from '../lib/drop-log/ulogd-reader.js';
import { TaintRemover, watchingNode } from './taint-remover.js';
import { KubeLeaseStore } from '../lib/kube/leases.js';
import { KubeEventSink } from '../lib/kube/events.js';
import { LeaderElector } from './leader-election.js';
import { PolicyReporter } from './policy-reporter.js';
import { policyReports } from './policy-events.js';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * The daemon, wired. Data flows one way:
 *
 *   Reflectors (list+watch) ─► ClusterCache (records) ─► DataplaneCompiler ─► SyncLoop ─► DataplaneApplier ─► kernel
 *   NodeNetworkWatcher (links, addresses, routes) ──────────┘  (further pod interfaces)  └─ refresh: read back, repair, count drops
 *   Status and metrics servers read the state; they never write.
 *   ClusterCache's problems with NetworkPolicies ─► PolicyReporter ─► Events, from the one daemon the Lease elects (LeaderElector)
 *   ClusterPolicyWatch: discovery ─► a Reflector of ClusterNetworkPolicies while they are served ─► ClusterCache
 *   ClusterCache's ClusterNetworkPolicies ─► ConditionWriter ─► their Accepted condition, from the same elected daemon
 *
 * Nothing is programmed before every watch has listed once (ClusterNetworkPolicies: once discovery has
 * said whether they are served, and listed them if so) and the node's network has been read, so a
 * half-known cluster never replaces rules a previous process left. While the API server is away, the
 * last rules stay in force. Where palisade cannot enforce all of policy (kube-proxy in IPVS mode,
 * node-checks.ts) it programs nothing more and says why, rather than enforce half.
 */

const RESOURCES: readonly { kind: Exclude<ResourceKind, 'ClusterNetworkPolicy'>; path: string }[] = [
  { kind: 'Namespace', path: '/api/v1/namespaces' },
  { kind: 'Pod', path: '/api/v1/pods' },
  { kind: 'NetworkPolicy', path: '/apis/networking.k8s.io/v1/networkpolicies' },
  { kind: 'Node', path: '/api/v1/nodes' },
];

/** One refresh in this many compares every set member, not just each set's size. */
const FULL_REFRESH_EVERY = 6;

export interface DaemonDeps {
  readonly client: ApiClient;
  readonly runner: CommandRunner;
  readonly logger: Logger;
  readonly clock?: Clock;
  /** Makes the drop log's NFLOG reader; by default ulogd, run in the node's network namespace through `runner`. */
  readonly nflogReader?: (group: number, events: NflogReaderEvents) => NflogReader;
}

/**
 * Where ulogd keeps its configuration, socket and pid file: the same for every process of palisade on
 * a node (so a restarted daemon finds, and stops, a reader its predecessor left behind), different
 * between nodes that share a filesystem (the nodes of one lab; each lab gives its nodes their own TMPDIR).
 */
function readerDirectory(nodeName: string, group: number): string {
  return join(tmpdir(), `palisade-nflog-${createHash('sha256').update(nodeName).digest('hex').slice(0, 10)}-${group}`);
}

/** How long after a failed start the drop log's reader is tried again. */
const READER_RETRY_MS = 30_000;

export class Daemon {
  readonly metrics = new DaemonMetrics();
  private readonly config: DaemonConfig;
  private readonly deps: DaemonDeps;
  private readonly clock: Clock;
  private readonly cache: ClusterCache;
  private readonly reflectors: Reflector[];
  /** Removes the startup taint from this node once ready; null with --startup-taint none. */
  private readonly taint: TaintRemover | null;
  private readonly loop: SyncLoop;
  private applier: DataplaneApplier | null = null;
  private backend: BackendDecision | null = null;
  private dataplane: Dataplane | null = null;
  private drops: readonly DropCounters[] = [];
  private statusServer: HttpServer | null = null;
  private metricsServer: HttpServer | null = null;
  private firstApplied = false;
  private readonly flows: FlowForgetter;
  private readonly network: NodeNetworkWatcher;
  private findings: NodeFindings = { refusal: null, unenforced: [] };
  private refreshes = 0;
  readonly dropLog: DropLog;
  private reader: NflogReader | null = null;
  private readerError: string | null = null;
  private readerRetry: NodeJS.Timeout | null = null;
  private stopping = false;
  private readonly elector: LeaderElector | null = null;
  private readonly reporter: PolicyReporter | null = null;
  /** Writes the Accepted condition on ClusterNetworkPolicies when this daemon leads; null when --policy-events is off. */
  private readonly conditions: ConditionWriter | null = null;
  private readonly clusterPolicyWatch: ClusterPolicyWatch;
  /** When the oldest change not yet in the kernel arrived, per resource kind. */
  private pendingSince = new Map<ResourceKind, number>();
  private sync: SyncState = { lastAttemptAt: null, lastSuccessAt: null, lastDurationMs: null, lastError: null, consecutiveFailures: 0, pendingChanges: false };

  constructor(config: DaemonConfig, deps: DaemonDeps) {
    this.config = config;
    this.deps = deps;
    this.clock = deps.clock ?? realClock;
    this.cache = new ClusterCache(config.compiler, (kind) => this.changed(kind), deps.logger);
    this.taint = config.startupTaint === null ? null : new TaintRemover({
      taint: config.startupTaint,
      nodeName: config.compiler.nodeName,
      client: deps.client,
      clock: this.clock,
      logger: deps.logger,
      onPresent: (present) => this.metrics.startupTaintPresent.set(present ? 1 : 0),
      onOutcome: (outcome) => this.metrics.startupTaintRemovals.inc({ outcome }),
    });
    const taint = this.taint;
    this.reflectors = RESOURCES.map(({ kind, path }) => new Reflector({
      client: deps.client,
      path,
      handler: kind === 'Node' && taint !== null ? watchingNode(config.compiler.nodeName, this.cache.handler(kind), (node) => taint.observe(node)) : this.cache.handler(kind),
      logger: deps.logger,
      onStats: (event) => this.watchEvent(kind, event),
    }));
    this.clusterPolicyWatch = new ClusterPolicyWatch({
      discover: () => servesResource(deps.client, CLUSTER_POLICY_API_VERSION, 'clusternetworkpolicies'),
      makeReflector: () => this.clusterPolicyReflector(),
      forget: () => {
        this.cache.forgetAll('ClusterNetworkPolicy');
        this.reportConditions();
      },
      onServedChange: (served) => {
        this.metrics.clusterPoliciesServed.set(served ? 1 : 0);
        if (this.allSynced()) this.loop.request();
      },
      intervalMs: config.clusterPolicyDiscoveryIntervalMs,
      clock: this.clock,
      logger: deps.logger,
    });
    this.flows = new FlowForgetter(new Conntrack(deps.runner), deps.logger);
    this.dropLog = new DropLog({ capacity: config.dropLogBuffer, logger: deps.logger, metrics: this.metrics.dropLog, now: () => this.clock.now() });
    this.dropLog.setPodLookup((address) => this.cache.compiler.podAt(address));
    this.network = new NodeNetworkWatcher({
      runner: deps.runner,
      logger: deps.logger,
      onChange: (network) => this.networkChanged(network),
      onError: (error) => deps.logger.error({ err: error }, 'cannot read the node\'s network (links, addresses, routes); retrying'),
    });
    const events = config.policyEvents;
    if (events !== null) {
      const reporterRef: { current: PolicyReporter | null } = { current: null };
      const conditionsRef: { current: ConditionWriter | null } = { current: null };
      this.elector = new LeaderElector({
        store: new KubeLeaseStore(deps.client, events.leaseNamespace, events.leaseName),
        identity: events.identity,
        clock: this.clock,
        logger: deps.logger,
        onChange: (leader) => {
          this.metrics.policyReporterLeader.set(leader ? 1 : 0);
          reporterRef.current?.leadershipChanged();
          conditionsRef.current?.leadershipChanged();
        },
      });
      this.reporter = new PolicyReporter({
        election: this.elector,
        sink: new KubeEventSink(deps.client),
        reporter: { instance: events.identity, node: config.compiler.nodeName },
        clock: this.clock,
        logger: deps.logger,
        metrics: { eventCreated: (reason) => this.metrics.policyEvents.inc({ reason }) },
      });
      reporterRef.current = this.reporter;
      this.conditions = new ConditionWriter({
        election: this.elector,
        sink: new KubeClusterPolicyStatusSink(deps.client),
        clock: this.clock,
        logger: deps.logger,
        onWritten: (reason) => this.metrics.clusterPolicyConditions.inc({ reason }),
      });
      conditionsRef.current = this.conditions;
    }
    this.loop = new SyncLoop({
      delayMs: config.syncDelayMs,
      refreshIntervalMs: config.refreshIntervalMs,
      sync: () => this.syncOnce(),
      check: () => this.checkOnce(),
      refresh: () => this.refreshOnce(),
      clock: this.clock,
      logger: deps.logger,
    });
  }

  /** Where the servers listen (ports resolved when 0 was asked for). */
  addresses: { status: ListenAddress; metrics: ListenAddress } | null = null;

  async start(): Promise<void> {
    this.backend = await detectBackend(this.deps.runner, this.config.iptablesBackend);
    this.deps.logger.info({ backend: this.backend.backend, reason: this.backend.reason }, 'iptables backend chosen');
    this.applier = new DataplaneApplier({
      iptables: new Iptables({ runner: this.deps.runner, backend: this.backend.backend }),
      ipset: new Ipset({ runner: this.deps.runner }),
      names: new Names(this.config.compiler.chainPrefix),
      logger: this.deps.logger,
    });
    this.statusServer = new HttpServer(statusRoutes({
      ready: () => this.readiness(),
      status: () => this.status(),
      dataplane: () => this.dataplane,
      snapshot: () => this.cache.snapshot(),
      drops: (query) => this.dropLog.query(query),
      dropLogCapacity: this.config.dropLogBuffer,
      evaluatorOptions: () => ({
        selectorPods: this.config.compiler.policyBudget.selectorPods,
        ...(this.network.current === null ? {} : { localNode: { name: this.config.compiler.nodeName, addresses: new Set(this.network.current.localAddresses) } }),
      }),
    }));
    this.metricsServer = new HttpServer(new Map([['/metrics', async () => {
      this.problemsByKind();
      this.metrics.observeUnauthorized(this.deps.client.unauthorized);
      return text(200, await this.metrics.registry.metrics(), this.metrics.registry.contentType);
    }]]));
    // Set before the first scrape: a reader that is down must never pass for a drop log that is off.
    this.metrics.dropLogEnabled.set(this.config.compiler.dropLog === null ? 0 : 1);
    const status = await this.statusServer.listen(this.config.statusAddr);
    const metrics = await this.metricsServer.listen(this.config.metricsAddr);
    this.addresses = { status, metrics };
    this.loop.start();
    this.network.start();
    if (this.config.compiler.dropLog !== null) void this.startReader(this.config.compiler.dropLog.group);
    for (const reflector of this.reflectors) reflector.start();
    this.clusterPolicyWatch.start();
    this.deps.logger.info({ node: this.config.compiler.nodeName, status: `${status.host}:${status.port}`, metrics: `${metrics.host}:${metrics.port}` }, 'palisade started');
  }

  /** Stops watching and serving; the rules stay in the kernel, enforcing, for the next process to take over. */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.readerRetry !== null) clearTimeout(this.readerRetry);
    await this.taint?.stop();
    // Released before the watches stop, so another daemon reports from now on, without waiting for the Lease to expire.
    await this.reporter?.stop();
    await this.conditions?.stop();
    await this.elector?.stop();
    await this.reader?.stop().catch((error: unknown) => this.deps.logger.warn({ err: error }, 'stopping the drop log reader failed'));
    await Promise.all([...this.reflectors.map((r) => r.stop()), this.clusterPolicyWatch.stop()]);
    await this.network.stop();
    await this.loop.stop();
    await this.flows.stop();
    await Promise.all([this.statusServer?.close(), this.metricsServer?.close()]);
    // Its keep-alive connections would hold the process open.
    this.deps.client.close();
  }

  /**
   * The drop log's reader runs beside enforcement, never in its way: when it cannot start (its program
   * missing, its NFLOG group taken) the rules are installed all the same, /status says why, and it is
   * tried again. Packets the kernel logs meanwhile are discarded by the kernel, never queued.
   */
  private async startReader(group: number): Promise<void> {
    this.readerRetry = null;
    if (this.stopping) return;
    const events: NflogReaderEvents = {
      packet: (p) => this.dropLog.packet(p),
      lost: (count, why) => {
        this.dropLog.lost(count);
        this.deps.logger.warn({ count, why }, 'drop log records lost between the kernel and palisade');
      },
    };
    const reader = this.deps.nflogReader?.(group, events)
      ?? new UlogdReader({ group, runner: this.deps.runner, workDir: readerDirectory(this.config.compiler.nodeName, group), logger: this.deps.logger, events });
    try {
      await reader.start();
      if (this.stopping) {
        await reader.stop();
        return;
      }
      this.reader = reader;
      this.readerError = null;
      this.metrics.dropLogReaderUp.set(1);
      this.deps.logger.info({ group }, 'drop log reading NFLOG');
    } catch (error) {
      this.readerError = error instanceof Error ? error.message : String(error);
      this.metrics.dropLogReaderUp.set(0);
      this.deps.logger.error({ err: this.readerError, group, retryInMs: READER_RETRY_MS }, 'the drop log cannot read NFLOG; enforcement goes on without records');
      if (!this.stopping) this.readerRetry = setTimeout(() => void this.startReader(group), READER_RETRY_MS);
    }
  }

  /** Counts a reflector's events; the first sync waits for the last of the first lists, whether or not it changed anything. */
  private watchEvent(kind: ResourceKind, event: 'list' | 'relist' | 'watch' | 'failure' | 'handler-error'): void {
    if (event === 'watch') this.metrics.watchRestarts.inc({ resource: kind });
    if (event === 'relist') this.metrics.watchRelists.inc({ resource: kind });
    if (event === 'handler-error') this.metrics.watchHandlerErrors.inc({ resource: kind });
    if (event === 'list' && this.allSynced()) this.loop.request();
  }

  /**
   * ClusterNetworkPolicies, watched while served. Every change is handed to the status writer too: a
   * status-only update (the condition written) changes nothing the compiler sees, but it is what tells
   * the writer the condition is there.
   */
  private clusterPolicyReflector(): Reflector {
    const kind = 'ClusterNetworkPolicy';
    const inner = this.cache.handler(kind);
    const handler: ReflectorHandler = {
      beginList: () => inner.beginList(),
      listPage: (objects) => inner.listPage(objects),
      endList: () => {
        inner.endList();
        this.reportConditions();
      },
      event: (type, object) => {
        inner.event(type, object);
        this.reportConditions();
      },
    };
    return new Reflector({
      client: this.deps.client,
      path: CLUSTER_POLICIES_PATH,
      handler,
      logger: this.deps.logger,
      onStats: (event) => this.watchEvent(kind, event),
      // 404: the CRD may have been removed; discovery tells, without waiting for its next round.
      onError: (error) => {
        if (error instanceof ApiRequestError && error.status === 404) this.clusterPolicyWatch.recheck();
      },
    });
  }

  /**
   * Whether the cluster is known well enough to program. ClusterNetworkPolicies count only for the
   * first apply: a CRD installed later is listed while the rules already in force stay and keep being
   * updated, as they were before it existed.
   */
  private allSynced(): boolean {
    return this.reflectors.every((r) => r.synced) && (this.firstApplied || this.clusterPolicyWatch.settled);
  }

  private changed(kind: ResourceKind): void {
    if (!this.pendingSince.has(kind)) this.pendingSince.set(kind, this.clock.now());
    if (this.allSynced()) this.loop.request();
  }

  /** A multi-NIC pod's further interface, kube-proxy's mode, pods' interfaces: all read from here. */
  private networkChanged(network: NodeNetwork): void {
    this.cache.compiler.setNodeRoutes(routesByInterface(network));
    this.checkNode();
    this.loop.request();
  }

  /** Re-judges the node's network against the pods known now; logs and publishes what changed. */
  private checkNode(): void {
    const network = this.network.current;
    if (network === null) return;
    const localPods = new Map((this.dataplane?.endpoints ?? []).map((e) => [e.ip, `${e.namespace}/${e.name}`]));
    const before = this.findings;
    const after = checkNodeNetwork(network, this.config.compiler.interfacePrefixes, localPods);
    this.findings = after;
    if (after.refusal !== null && before.refusal === null) this.deps.logger.error({ reason: after.refusal.reason }, after.refusal.message);
    if (after.refusal === null && before.refusal !== null) this.deps.logger.info({ reason: before.refusal.reason }, 'the condition palisade refused to enforce under is gone; programming the node');
    const known = new Set(before.unenforced.map((u) => `${u.iface}|${u.address}`));
    const fresh = after.unenforced.filter((u) => !known.has(`${u.iface}|${u.address}`));
    if (fresh.length > 0) {
      this.deps.logger.warn({ routes: fresh, interfacePrefixes: this.config.compiler.interfacePrefixes }, 'pods on this node are routed through interfaces no --interface-prefix matches, so palisade enforces nothing on them; if AWS_VPC_K8S_CNI_VETHPREFIX is set, give palisade the same prefix');
    }
    this.metrics.observeNode(after);
  }

  readiness(): { ready: boolean; reason: string } {
    const waiting: string[] = RESOURCES.filter((_, i) => !this.reflectors[i]!.synced).map((r) => r.kind);
    if (!this.firstApplied && !this.clusterPolicyWatch.settled) {
      waiting.push(this.clusterPolicyWatch.status().served === null ? 'ClusterNetworkPolicy (discovery has not answered yet)' : 'ClusterNetworkPolicy');
    }
    if (waiting.length > 0) return { ready: false, reason: `waiting for the first list of ${waiting.join(', ')}` };
    if (this.network.current === null) return { ready: false, reason: `waiting for the first read of the node's links, addresses and routes${this.network.lastError === null ? '' : `: ${this.network.lastError}`}` };
    if (this.findings.refusal !== null) return { ready: false, reason: `refusing to enforce: ${this.findings.refusal.message}` };
    if (!this.firstApplied) return { ready: false, reason: 'the first apply has not completed yet' };
    if (this.loop.consecutiveFailures > 0) return { ready: false, reason: `the dataplane is failing: ${this.sync.lastError ?? 'unknown error'}` };
    return { ready: true, reason: 'ok' };
  }

  private async syncOnce(): Promise<void> {
    if (!this.allSynced() || this.applier === null || this.network.current === null) return;
    // Half the policy is no policy: nothing more is programmed; what was is left as it is (never opened).
    if (this.findings.refusal !== null) {
      this.publishReady(false);
      return;
    }
    const started = this.clock.now();
    const pending = this.pendingSince;
    this.pendingSince = new Map();
    this.sync = { ...this.sync, lastAttemptAt: started };
    const dataplane = this.cache.compiler.build();
    this.report();
    // Known before the kernel has them, so the first packet the new rules log is attributed.
    this.dropLog.install(dataplane.endpoints, dataplane.clusterDenyLogs);
    try {
      await this.applier.apply(dataplane);
    } catch (error) {
      // What the kernel still holds is the last good state: its prefixes stay current.
      if (this.dataplane !== null) this.dropLog.install(this.dataplane.endpoints, this.dataplane.clusterDenyLogs);
      // Changes not yet enforced keep their original arrival time.
      for (const [kind, since] of pending) if (!this.pendingSince.has(kind) || this.pendingSince.get(kind)! > since) this.pendingSince.set(kind, since);
      this.metrics.applyFailures.inc();
      this.sync = { ...this.sync, lastError: error instanceof Error ? error.message : String(error), consecutiveFailures: this.loop.consecutiveFailures + 1 };
      this.publishReady(false);
      throw error;
    }
    const enforced = this.clock.now();
    this.forgetReassignedAddresses();
    this.cache.logCompilerProblems();
    for (const [kind, since] of pending) this.metrics.changeToEnforced.observe({ resource: kind }, (enforced - since) / 1000);
    this.dataplane = dataplane;
    this.checkNode();
    if (!this.firstApplied) this.deps.logger.info({ syncMs: enforced - started }, 'ready: every watch has listed and the rules are in place');
    this.firstApplied = true;
    this.metrics.observeDataplane(dataplane);
    this.metrics.syncDuration.observe((enforced - started) / 1000);
    this.metrics.lastSync.set(enforced / 1000);
    this.sync = { ...this.sync, lastSuccessAt: enforced, lastDurationMs: enforced - started, lastError: null, consecutiveFailures: 0 };
    this.publishReady(this.findings.refusal === null);
  }

  /**
   * After every sync: the metric, and the startup taint's remover, which starts removing the taint
   * after the first success (and never waits in the sync's way).
   */
  private publishReady(ready: boolean): void {
    this.metrics.ready.set(ready ? 1 : 0);
    this.taint?.setReady(ready);
  }

  /**
   * Hands the policy reporter what it should say now, after each compile and each refresh; every
   * daemon keeps it, so any can take over. The election starts once this daemon knows the cluster: a
   * daemon still listing never leads.
   */
  private report(): void {
    if (this.reporter === null || this.elector === null) return;
    this.reporter.observe(policyReports(this.cache.allProblems(), this.cache.policyVersions()));
    this.reportConditions();
    this.elector.start();
  }

  /** Hands the condition writer what each ClusterNetworkPolicy's status should say, and what it says. */
  private reportConditions(): void {
    this.conditions?.observe(conditionReports(this.cache.clusterPolicyObjects(), this.cache.clusterPolicies(), this.cache.allProblems()));
  }

  /**
   * Flows tracked for an address that left its pod would let the next holder of the address through
   * on the old pod's behalf, even before palisade knows the new pod (replies pass ahead of every other
   * check). So they are cleared once the sync that sees the address change hands has applied. Only
   * owners on kubelet's word count: what a tenant writes in an annotation must never make palisade
   * clear another pod's flows.
   */
  private forgetReassignedAddresses(): void {
    const changes = this.cache.compiler.takeOwnerChanges();
    if (changes.size > 0) this.flows.forget(changes);
  }

  private async checkOnce(): Promise<void> {
    if (this.applier === null) return;
    this.countRepairs((await this.applier.checkWrites()).repaired);
  }

  private async refreshOnce(): Promise<void> {
    if (this.applier === null || !this.firstApplied) return;
    // Policies refused for the pods they name get another chance: the pods may have gone.
    if (this.cache.compiler.recheckBudgets()) this.loop.request();
    // A new generation that compiles to the same rules (one invalid policy edited into another) needs no sync, but is reported.
    this.report();
    // Every refresh compares rule hashes and set sizes; every FULL_REFRESH_EVERY-th one every set member too.
    this.refreshes++;
    const report = await this.applier.refresh({ full: this.refreshes % FULL_REFRESH_EVERY === 0 });
    this.countRepairs(report.repaired);
    const counters = await this.applier.readCounters();
    this.drops = counters.drops;
    this.metrics.observeDrops(this.drops);
    const logCounters: LogCounter[] = [
      ...this.drops.flatMap((d) => [
        ...(d.ingressLog === null ? [] : [{ ...d.ingressLog, direction: 'ingress' as const }]),
        ...(d.egressLog === null ? [] : [{ ...d.egressLog, direction: 'egress' as const }]),
      ]),
      ...counters.clusterLogs,
    ];
    this.dropLog.observeCounters(logCounters);
  }

  private countRepairs(findings: readonly { kind: string }[]): void {
    for (const finding of findings) this.metrics.driftRepairs.inc({ kind: finding.kind });
  }

  /** Publishes the problem gauges; cheap enough to do on every status or metrics read. */
  private problemsByKind(): void {
    this.metrics.objectsWithProblems.reset();
    const seen = new Set<string>();
    for (const p of this.cache.allProblems()) {
      const key = `${p.object.kind}|${p.object.namespace ?? ''}|${p.object.name}|${p.severity}`;
      if (seen.has(key)) continue;
      seen.add(key);
      this.metrics.objectsWithProblems.inc({ kind: p.object.kind, severity: p.severity });
    }
    const policies = this.cache.policies();
    this.metrics.policies.set(policies.length);
    this.metrics.policiesFailing.set(policies.filter((p) => p.failed).length);
    this.metrics.observeOverBudget(policies, this.cache.compiler.selectorPodsOverBudget());
    this.metrics.observeClusterPolicies(this.cache.clusterPolicies());
    this.metrics.objectHandlingFailures.set(this.cache.handlingFailures);
  }

  status(): ReturnType<typeof buildStatus> {
    this.problemsByKind();
    const readiness = this.readiness();
    const cnpReflector = this.clusterPolicyWatch.reflector;
    return buildStatus({
      node: this.config.compiler.nodeName,
      backend: this.backend === null ? null : { name: this.backend.backend, reason: this.backend.reason },
      interfacePrefixes: this.config.compiler.interfacePrefixes,
      chainPrefix: this.config.compiler.chainPrefix,
      ready: readiness.ready,
      readyReason: readiness.reason,
      sync: { ...this.sync, pendingChanges: this.pendingSince.size > 0 || this.loop.pending, consecutiveFailures: this.loop.consecutiveFailures },
      watches: [
        ...RESOURCES.map(({ kind }, i) => ({ resource: kind, synced: this.reflectors[i]!.synced, ...this.reflectors[i]!.stats })),
        ...(cnpReflector === null ? [] : [{ resource: 'ClusterNetworkPolicy', synced: cnpReflector.synced, ...cnpReflector.stats }]),
      ],
      dataplane: this.dataplane,
      drops: this.drops,
      policies: this.cache.policies(),
      selectorPodsOverBudget: this.cache.compiler.selectorPodsOverBudget(),
      problems: this.cache.allProblems(),
      counts: { pods: this.cache.count('Pod'), namespaces: this.cache.count('Namespace'), policies: this.cache.count('NetworkPolicy') },
      repairs: this.applier?.repairCounts() ?? new Map(),
      nodeNetwork: this.network.current,
      findings: this.findings,
      dropLog: {
        enabled: this.config.compiler.dropLog !== null,
        settings: this.config.compiler.dropLog,
        readerRunning: this.reader?.running ?? false,
        readerError: this.readerError,
        buffer: this.config.dropLogBuffer,
        lost: this.dropLog.query({ limit: 0 }).lost,
      },
      startupTaint: this.taint?.status() ?? null,
      policyReporter: this.reporter?.status() ?? null,
      clusterPolicies: this.cache.clusterPolicies(),
      clusterPolicyDiscovery: this.clusterPolicyWatch.status(),
      clusterPolicyConditions: this.conditions?.status() ?? null,
    });
  }

  /** For tests and the demo: resolves once no sync is running or queued to run now, and flows are cleared. */
  async settled(): Promise<void> {
    await this.network.idle();
    await this.loop.idle();
    await this.flows.idle();
    await this.taint?.idle();
  }
}
