import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { PalisadeError, UsageError } from '../lib/errors.js';
import { commandAvailable, spawnCollect } from '../lib/exec.js';
import { Lab } from '../lib/lab/cluster.js';
import { loadManifests } from '../lib/manifests.js';
import { removeStaleNamespaces } from '../lib/netns.js';
import type { PodHandle } from '../lib/pod-network.js';
import { probe, ProbeServer } from '../lib/probe.js';
import type { CommandIO } from './command-io.js';
import { DEMO_NAMESPACE, DEMO_NODE, DEMO_PODS, DEMO_STEPS, ECHO_PORT } from './demo-script.js';
import type { DemoAction, DemoPod, DemoStep, EndpointExpectation, ExplainExpectation, ReachabilityExpectation } from './demo-script.js';

export const DEMO_HELP = `Usage: palisade demo

Replays the "K8S: Network Policy" tutorial (two busybox pods; deny-all, allow-out-to-in,
isolate-namespace, allow-all) on a lab EKS node built from network namespaces on this machine: pods
wired like the AWS VPC CNI, an embedded API server, and a real "palisade daemon" process enforcing
the policies of manifests/examples. Every step prints the kubectl command it stands for, what was
observed (real packets between the pods, and the node's status endpoint), and ✔ or ✘ against what
the tutorial says; the exit status is 1 if any step differs.

Needs root, iproute2, iptables (nft) and ipset. It never touches the machine's own network
namespace: everything lives in namespaces named paldemo-*, deleted at the end, on Ctrl-C (SIGINT),
on SIGTERM and on errors. Takes about 10 seconds.
`;

/** How long a step's expectations may take to hold before the step counts as failed. */
const STEP_DEADLINE_MS = 10_000;
const READY_DEADLINE_MS = 20_000;
/** A probe that has not had its echo back by then counts as blocked (policies drop, they do not reject). */
const PROBE_TIMEOUT_MS = 500;
const POLL_PAUSE_MS = 100;
const STATUS_ADDRESS = '127.0.0.1:9710';
/** From dist/daemon/demo-command.js, the repository root is two levels up. */
const REPO_ROOT = path.resolve(fileURLToPath(import.meta.url), '../../..');
const EXAMPLES_DIR = path.join(REPO_ROOT, 'manifests', 'examples');
const REQUIRED_TOOLS: readonly { command: string; package: string }[] = [
  { command: 'ip', package: 'iproute2' },
  { command: 'iptables-nft-restore', package: 'iptables' },
  { command: 'iptables-nft-save', package: 'iptables' },
  { command: 'ipset', package: 'ipset' },
];

type Obj = Record<string, unknown>;

/** Thrown at the next checkpoint once SIGINT or SIGTERM has arrived. */
class Interrupted extends Error {
  constructor() {
    super('interrupted');
    this.name = 'Interrupted';
  }
}

// ---------------------------------------------------------------------------------------------
// What the node's status endpoint answers (the parts the demo reads)
// ---------------------------------------------------------------------------------------------

interface Counter {
  readonly packets: number;
  readonly bytes: number;
}
interface StatusEndpoint {
  readonly namespace: string;
  readonly name: string;
  readonly ip: string;
  readonly interfaces: readonly string[];
  readonly isolated: { readonly ingress: boolean; readonly egress: boolean };
  readonly policies: { readonly ingress: readonly string[]; readonly egress: readonly string[] };
  readonly dropped: { readonly ingress: Counter | null; readonly egress: Counter | null };
}
interface StatusDocument {
  readonly ready: boolean;
  readonly readyReason: string;
  readonly backend: { readonly name: string; readonly reason: string } | null;
  readonly sync: { readonly pendingChanges: boolean; readonly lastError: string | null; readonly lastDurationMs: number | null; readonly lastSuccess: string | null };
  readonly endpoints: readonly StatusEndpoint[];
  readonly failedPolicies: readonly { readonly policy: string; readonly why: readonly string[] }[];
}
interface ExplainDirection {
  readonly allowed: boolean;
  readonly reason: string;
}
interface ExplainAnswer {
  readonly allowed: boolean;
  readonly egress: ExplainDirection;
  readonly ingress: ExplainDirection;
}

// ---------------------------------------------------------------------------------------------
// Observations of one polling round
// ---------------------------------------------------------------------------------------------

interface CheckResult {
  readonly ok: boolean;
  /** Lines printed for it once the step is done; the first gets the ✔/✘ mark. */
  readonly lines: readonly string[];
}

interface Round {
  readonly ok: boolean;
  readonly checks: readonly CheckResult[];
  readonly syncMs: number | null;
  /** When the daemon last finished writing the rules (epoch ms), by its status. */
  readonly lastSuccessMs: number | null;
}

// ---------------------------------------------------------------------------------------------
// The command
// ---------------------------------------------------------------------------------------------

export async function demoCommand(argv: readonly string[], io: CommandIO): Promise<number> {
  const { values, positionals } = parseArgs({ args: [...argv], options: { help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true });
  if (values.help === true) {
    io.stdout(DEMO_HELP);
    return 0;
  }
  if (positionals.length > 0) throw new UsageError(`demo takes no arguments, got ${positionals.join(' ')}`);

  const missing = await missingRequirements();
  if (missing !== null) {
    io.stderrLine(`palisade demo: cannot run here: ${missing}`);
    return 1;
  }
  // Read before anything is created, so a missing file costs nothing to clean up.
  const policies = await loadExamplePolicies();
  const useIcmp = await commandAvailable('ping');

  const demo = new Demo(io, policies, useIcmp);
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    signals++;
    if (signals === 1) {
      io.stdout(`\n⚠ ${signal} received: stopping the demo and cleaning up (deleting its network namespaces)...\n`);
      demo.interrupt(signal);
    } else {
      io.stdout(`⚠ ${signal} again: still cleaning up, please wait (leaving namespaces behind is worse)\n`);
    }
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    return await demo.main();
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/** Null when the demo can run, else what is missing and how to get it. */
async function missingRequirements(): Promise<string | null> {
  if (process.platform !== 'linux') return `it needs Linux network namespaces, and this is ${process.platform}`;
  const problems: string[] = [];
  if (process.getuid?.() !== 0) problems.push('it must run as root (it creates network namespaces and firewalls inside them): run it with sudo');
  const absent: { command: string; package: string }[] = [];
  for (const tool of REQUIRED_TOOLS) if (!(await commandAvailable(tool.command))) absent.push(tool);
  if (absent.length > 0) {
    const packages = [...new Set(['iptables', 'ipset', ...absent.map((t) => t.package)])];
    problems.push(`missing on PATH: ${absent.map((t) => t.command).join(', ')}; install them with: apt-get install -y ${packages.join(' ')}`);
  }
  return problems.length === 0 ? null : problems.join('; ');
}

/** The NetworkPolicy of each example file the steps create, by file name. */
async function loadExamplePolicies(): Promise<Map<string, Obj>> {
  const files = new Set<string>();
  for (const step of DEMO_STEPS) for (const c of step.commands) if (c.action.kind === 'create') files.add(c.action.file);
  const policies = new Map<string, Obj>();
  for (const file of files) {
    const full = path.join(EXAMPLES_DIR, file);
    const loaded = await loadManifests([full]);
    const first = loaded[0]?.object;
    if (loaded.length !== 1 || first === undefined || first['kind'] !== 'NetworkPolicy') {
      throw new PalisadeError('DEMO', `${full}: expected exactly one NetworkPolicy`);
    }
    policies.set(file, first);
  }
  return policies;
}

function podObject(name: string, ip: string, labels: Readonly<Record<string, string>>): Obj {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: DEMO_NAMESPACE, labels: { ...labels } },
    spec: { nodeName: DEMO_NODE.name, containers: [{ name: name, image: 'busybox', command: ['sleep', '3600'] }] },
    status: { phase: 'Running', podIP: ip, podIPs: [{ ip }] },
  };
}

function namespaceObject(name: string, labels: Readonly<Record<string, string>>): Obj {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels: { 'kubernetes.io/metadata.name': name, ...labels } } };
}

function metadataName(object: Obj): string {
  const metadata = object['metadata'] as Obj | undefined;
  return String(metadata?.['name'] ?? '');
}

const seconds = (ms: number): string => `${(ms / 1000).toFixed(2)} s`;
const mark = (ok: boolean): string => (ok ? '✔' : '✘');
const reach = (reachable: boolean): string => (reachable ? 'reachable' : 'blocked');

class Demo {
  private readonly io: CommandIO;
  private readonly policyFiles: ReadonlyMap<string, Obj>;
  private readonly useIcmp: boolean;
  /** Every namespace of this run starts with it, so a final sweep can only ever touch this run's. */
  private readonly prefix = `paldemo-${randomBytes(2).toString('hex')}`;
  private readonly abort = new AbortController();
  private signal: NodeJS.Signals | null = null;
  private lab: Lab | null = null;
  private readonly servers: ProbeServer[] = [];
  private readonly pods = new Map<DemoPod, PodHandle>();
  private readonly podLabels = new Map<DemoPod, Record<string, string>>();
  private namespaceLabels: Record<string, string> = {};
  /** Policy names in the namespace, in creation order. */
  private readonly policies: string[] = [];
  private teardownDone: Promise<boolean> | null = null;

  constructor(io: CommandIO, policyFiles: ReadonlyMap<string, Obj>, useIcmp: boolean) {
    this.io = io;
    this.policyFiles = policyFiles;
    this.useIcmp = useIcmp;
  }

  interrupt(signal: NodeJS.Signals): void {
    this.signal ??= signal;
    this.abort.abort();
  }

  private out(line = ''): void {
    this.io.stdout(`${line}\n`);
  }

  private checkpoint(): void {
    if (this.abort.signal.aborted) throw new Interrupted();
  }

  private async sleep(ms: number): Promise<void> {
    this.checkpoint();
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.abort.signal.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.abort.signal.addEventListener('abort', done, { once: true });
    });
    this.checkpoint();
  }

  /** Runs the walkthrough, then always tears down; the exit status. */
  async main(): Promise<number> {
    const started = performance.now();
    let code: number;
    try {
      const failed = await this.walkthrough();
      const total = seconds(performance.now() - started);
      this.out();
      if (failed.length === 0) this.out(`✔ all ${DEMO_STEPS.length} steps behaved as the tutorial says (${total})`);
      else this.out(`✘ ${failed.length} of ${DEMO_STEPS.length} steps did not behave as the tutorial says: step ${failed.join(', step ')} (${total})`);
      code = failed.length === 0 ? 0 : 1;
    } catch (error) {
      if (this.abort.signal.aborted) {
        code = this.signal === 'SIGTERM' ? 143 : 130;
      } else {
        this.out(`\n✘ the demo failed: ${error instanceof Error ? error.message : String(error)}`);
        this.printDaemonLog();
        code = 1;
      }
    }
    const clean = await this.teardown();
    if (this.signal !== null) {
      this.out(`interrupted by ${this.signal}; ${clean ? 'everything the demo created is gone' : 'cleanup was incomplete (see above)'}`);
      code = this.signal === 'SIGTERM' ? 143 : 130;
    }
    return clean ? code : Math.max(code, 1);
  }

  private async walkthrough(): Promise<number[]> {
    this.out('palisade demo: the "K8S: Network Policy" tutorial, replayed on a lab EKS node');
    this.out(`  connectivity checks: ${this.useIcmp ? 'real ICMP ping (ping -c1 -W1) from inside the pod' : `ping (TCP echo probe on port ${ECHO_PORT}): the ping program is not installed here, so each "ping" is one TCP echo round trip to the pod's echo server, ${PROBE_TIMEOUT_MS} ms without an echo counting as blocked`}`);
    this.out();
    await this.setUp();
    const failed: number[] = [];
    for (const step of DEMO_STEPS) {
      this.checkpoint();
      if (!(await this.runStep(step))) failed.push(step.number);
    }
    if (failed.length > 0) this.printDaemonLog();
    return failed;
  }

  private async setUp(): Promise<void> {
    this.out('Setting up (in place of: helm install calico projectcalico/tigera-operator)');
    const started = performance.now();
    // One node: the lab API server listens on the node's loopback, where its daemon reaches it.
    this.lab = await Lab.create({
      prefix: this.prefix,
      nodes: [{ name: DEMO_NODE.name, address: '127.0.0.1', podCidr: DEMO_NODE.podCidr }],
      daemonArgs: ['--iptables-backend', 'nft'],
    });
    this.checkpoint();
    const node = this.lab.node(DEMO_NODE.name);
    this.out(`  node ${DEMO_NODE.name}: network namespace ${node.netns.name}; pods get ${DEMO_NODE.podCidr}, wired like the AWS VPC CNI (an eni… veth each, gateway 169.254.1.1)`);
    this.out('  lab API server inside the node on 127.0.0.1:6443: every kubectl below is a call to it');
    await this.lab.api.apply(namespaceObject(DEMO_NAMESPACE, this.namespaceLabels));
    this.checkpoint();
    const daemon = await this.lab.startDaemon(DEMO_NODE.name);
    await this.waitReady();
    const status = await this.status();
    this.out(`  palisade daemon on ${DEMO_NODE.name}: pid ${daemon.child.pid ?? '?'}, ready (iptables ${status.backend?.name ?? '?'}); status endpoint ${STATUS_ADDRESS} on the node`);
    this.out(`  lab ready in ${seconds(performance.now() - started)}`);
  }

  private async waitReady(): Promise<void> {
    const lab = this.requireLab();
    const deadline = performance.now() + READY_DEADLINE_MS;
    for (;;) {
      this.checkpoint();
      if ((await lab.status(DEMO_NODE.name, '/readyz')).status === 200) return;
      if (performance.now() > deadline) throw new PalisadeError('DEMO', `the daemon did not become ready within ${READY_DEADLINE_MS} ms`);
      await this.sleep(50);
    }
  }

  private requireLab(): Lab {
    if (this.lab === null) throw new PalisadeError('DEMO', 'the lab is not set up');
    return this.lab;
  }

  // -------------------------------------------------------------------------------------------
  // Steps
  // -------------------------------------------------------------------------------------------

  private async runStep(step: DemoStep): Promise<boolean> {
    this.out();
    this.out(`Step ${step.number}: ${step.title}`);
    for (const command of step.commands) {
      this.checkpoint();
      this.out(`  $ ${command.kubectl}`);
      for (const line of await this.perform(command.action)) this.out(`    ${line}`);
    }
    const issued = performance.now();
    const issuedWall = Date.now();
    const deadline = issued + STEP_DEADLINE_MS;
    let round: Round;
    for (;;) {
      this.checkpoint();
      round = await this.observe(step);
      if (round.ok || performance.now() > deadline) break;
      await this.sleep(POLL_PAUSE_MS);
    }
    const elapsed = performance.now() - issued;
    for (const check of round.checks) {
      const [first, ...rest] = check.lines;
      if (first === undefined) continue;
      // Command echoes ("$ ...") carry no mark; the lines after them do.
      if (first.startsWith('$ ')) {
        this.out(`  ${first}`);
        const [result, ...more] = rest;
        if (result !== undefined) this.out(`    ${mark(check.ok)} ${result}`);
        for (const line of more) this.out(`      ${line}`);
      } else {
        this.out(`    ${mark(check.ok)} ${first}`);
        for (const line of rest) this.out(`      ${line}`);
      }
    }
    // The daemon's own record of when it finished writing says how long enforcement took; the probes
    // only bound it from above (a blocked probe takes its whole timeout to say so).
    const inForce = round.lastSuccessMs === null ? null : Math.max(0, round.lastSuccessMs - issuedWall);
    const timing = step.commands.length === 0
      ? `observed in ${seconds(elapsed)}`
      : round.ok
        ? `enforced ${inForce === null ? '' : `${seconds(inForce)} after the last command (the daemon's sync took ${round.syncMs ?? '?'} ms), `}observed within ${seconds(elapsed)}`
        : `still not as expected ${seconds(elapsed)} after the last command`;
    this.out(`${mark(round.ok)} step ${step.number}: ${step.summary} (${timing})`);
    return round.ok;
  }

  /** Does what a kubectl command would; returns what kubectl would print. */
  private async perform(action: DemoAction): Promise<string[]> {
    const lab = this.requireLab();
    switch (action.kind) {
      case 'run-pod': {
        const spec = DEMO_PODS.find((p) => p.name === action.pod);
        if (spec === undefined) throw new PalisadeError('DEMO', `no demo pod ${action.pod}`);
        const handle = await lab.addPod(DEMO_NODE.name, { namespace: DEMO_NAMESPACE, name: spec.name, ip: spec.ip });
        this.pods.set(spec.name, handle);
        this.checkpoint();
        this.servers.push(await ProbeServer.start(handle.netns, { tcp: [ECHO_PORT], udp: [] }));
        this.checkpoint();
        this.podLabels.set(spec.name, { run: spec.name });
        await lab.api.apply(podObject(spec.name, spec.ip, this.podLabels.get(spec.name) ?? {}));
        return [`pod/${spec.name} created   (IP ${spec.ip} on ${DEMO_NODE.name}, host veth ${handle.hostInterface}, echo server on tcp/${ECHO_PORT})`];
      }
      case 'create': {
        const policy = this.policyFiles.get(action.file);
        if (policy === undefined) throw new PalisadeError('DEMO', `no example policy ${action.file}`);
        const name = metadataName(policy);
        if (this.policies.includes(name)) return [`Error from server (AlreadyExists): networkpolicies.networking.k8s.io "${name}" already exists`];
        await lab.api.apply(policy);
        this.policies.push(name);
        return [`networkpolicy.networking.k8s.io/${name} created   (from manifests/examples/${action.file})`];
      }
      case 'label-pod': {
        const spec = DEMO_PODS.find((p) => p.name === action.pod);
        if (spec === undefined) throw new PalisadeError('DEMO', `no demo pod ${action.pod}`);
        const labels = { ...(this.podLabels.get(action.pod) ?? {}), [action.key]: action.value };
        await lab.api.apply(podObject(spec.name, spec.ip, labels));
        this.podLabels.set(action.pod, labels);
        return [`pod/${action.pod} labeled`];
      }
      case 'label-namespace': {
        const labels = { ...this.namespaceLabels, [action.key]: action.value };
        await lab.api.apply(namespaceObject(action.namespace, labels));
        this.namespaceLabels = labels;
        return [`namespace/${action.namespace} labeled`];
      }
      case 'delete-all-policies': {
        if (this.policies.length === 0) return [`No resources found in ${DEMO_NAMESPACE} namespace.`];
        const lines: string[] = [];
        for (const name of [...this.policies].sort()) {
          this.checkpoint();
          await lab.api.delete('NetworkPolicy', DEMO_NAMESPACE, name);
          this.policies.splice(this.policies.indexOf(name), 1);
          lines.push(`networkpolicy.networking.k8s.io "${name}" deleted`);
        }
        return lines;
      }
    }
  }

  /**
   * One polling round: the status endpoint first, then packets. Reading the status first means a
   * reachability that matches was measured with the rules the status describes already in force.
   */
  private async observe(step: DemoStep): Promise<Round> {
    const status = await this.status();
    const answers = await Promise.all((step.explain ?? []).map((q) => this.explain(q)));
    this.checkpoint();
    const reachable = await Promise.all(step.reachability.map((r) => this.reachable(r.from, r.to)));
    const checks: CheckResult[] = [];
    step.reachability.forEach((expected, i) => checks.push(this.reachabilityCheck(expected, reachable[i] ?? false)));
    if (step.showStatus === true) checks.push({ ok: true, lines: [`$ curl -s ${STATUS_ADDRESS}/status   (on ${DEMO_NODE.name}; shown per pod)`] });
    for (const expected of step.endpoints ?? []) checks.push(this.endpointCheck(expected, status, step.showStatus === true));
    (step.explain ?? []).forEach((question, i) => checks.push(this.explainCheck(question, answers[i]!)));
    // Always required, printed only when it does not hold.
    const inSync = !status.sync.pendingChanges && status.sync.lastError === null && status.failedPolicies.length === 0;
    if (!inSync) {
      const why = [status.sync.pendingChanges ? 'changes still pending' : '', status.sync.lastError ?? '', ...status.failedPolicies.map((f) => `${f.policy} failed: ${f.why.join('; ')}`)].filter((s) => s !== '');
      checks.push({ ok: false, lines: [`the daemon is in sync: ${why.join('; ')}`] });
    }
    return { ok: checks.every((c) => c.ok), checks, syncMs: status.sync.lastDurationMs, lastSuccessMs: status.sync.lastSuccess === null ? null : Date.parse(status.sync.lastSuccess) };
  }

  private podSpec(name: DemoPod): { handle: PodHandle; ip: string } {
    const handle = this.pods.get(name);
    if (handle === undefined) throw new PalisadeError('DEMO', `pod ${name} has not been created`);
    return { handle, ip: handle.spec.ip };
  }

  private async reachable(from: DemoPod, to: DemoPod): Promise<boolean> {
    const source = this.podSpec(from).handle;
    const target = this.podSpec(to).ip;
    if (!this.useIcmp) return probe(source, target, 'tcp', ECHO_PORT, { timeoutMs: PROBE_TIMEOUT_MS });
    const result = await source.netns.exec(['ping', '-c1', '-W1', target], { timeoutMs: 10_000 });
    if (result.code === 0) return true;
    if (result.code === 1) return false;
    throw new PalisadeError('DEMO', `ping in ${source.netns.name} failed (exit ${result.code}): ${result.stderr.trim()}`);
  }

  private reachabilityCheck(expected: ReachabilityExpectation, reachable: boolean): CheckResult {
    const target = this.podSpec(expected.to).ip;
    const how = this.useIcmp ? '' : `   # ping (TCP echo probe on port ${ECHO_PORT})`;
    return {
      ok: reachable === expected.reachable,
      lines: [`$ kubectl exec -it ${expected.from} -- ping -c3 ${target}${how}`, `${expected.from} → ${expected.to}: ${reach(reachable)} (expected ${reach(expected.reachable)})`],
    };
  }

  private async status(): Promise<StatusDocument> {
    const reply = await this.requireLab().status(DEMO_NODE.name, '/status');
    if (reply.status !== 200) throw new PalisadeError('DEMO', `GET /status on ${DEMO_NODE.name}: ${reply.status === 0 ? reply.body : `HTTP ${reply.status}`}`);
    return JSON.parse(reply.body) as StatusDocument;
  }

  private endpointRef(value: string): string {
    return DEMO_PODS.some((p) => p.name === value) ? `${DEMO_NAMESPACE}/${value}` : value;
  }

  private explainQuery(question: ExplainExpectation): { shown: string; query: string } {
    const params: [string, string][] = [['from', this.endpointRef(question.from)], ['to', this.endpointRef(question.to)], ['protocol', 'TCP'], ['port', String(ECHO_PORT)]];
    return { shown: `/explain?${params.map(([k, v]) => `${k}=${v}`).join('&')}`, query: `/explain?${new URLSearchParams(params).toString()}` };
  }

  private async explain(question: ExplainExpectation): Promise<ExplainAnswer> {
    const { query } = this.explainQuery(question);
    const reply = await this.requireLab().status(DEMO_NODE.name, query);
    if (reply.status !== 200) throw new PalisadeError('DEMO', `GET ${query} on ${DEMO_NODE.name}: ${reply.status === 0 ? reply.body : `HTTP ${reply.status}: ${reply.body}`}`);
    return JSON.parse(reply.body) as ExplainAnswer;
  }

  private explainCheck(question: ExplainExpectation, answer: ExplainAnswer): CheckResult {
    const verdict = (allowed: boolean): string => (allowed ? 'allowed' : 'denied');
    return {
      ok: answer.allowed === question.allowed,
      lines: [
        `$ curl -s '${STATUS_ADDRESS}${this.explainQuery(question).shown}'`,
        `${question.from} → ${question.to} tcp/${ECHO_PORT}: ${verdict(answer.allowed)} (expected ${verdict(question.allowed)})`,
        `egress:  ${verdict(answer.egress.allowed)}, ${answer.egress.reason}`,
        `ingress: ${verdict(answer.ingress.allowed)}, ${answer.ingress.reason}`,
      ],
    };
  }

  private endpointCheck(expected: EndpointExpectation, status: StatusDocument, detailed: boolean): CheckResult {
    const ref = `${DEMO_NAMESPACE}/${expected.pod}`;
    const found = status.endpoints.find((e) => e.namespace === DEMO_NAMESPACE && e.name === expected.pod);
    if (found === undefined) return { ok: false, lines: [`/status ${ref}: not among the node's endpoints yet`] };
    const sorted = (list: readonly string[]): string => [...list].sort().join(',');
    const isolationOk = found.isolated.ingress === expected.isolated.ingress && found.isolated.egress === expected.isolated.egress;
    const policiesOk = sorted(found.policies.ingress) === sorted(expected.policies.ingress) && sorted(found.policies.egress) === sorted(expected.policies.egress);
    const dropsOk = (expected.droppedSome ?? []).every((direction) => (found.dropped[direction]?.packets ?? 0) > 0);
    const ok = isolationOk && policiesOk && dropsOk;
    const isolation = found.isolated.ingress || found.isolated.egress
      ? `isolated for ${[found.isolated.ingress ? 'ingress' : '', found.isolated.egress ? 'egress' : ''].filter((s) => s !== '').join(' and ')}`
      : 'not isolated';
    const dropped = (c: Counter | null): string => (c === null ? 'n/a' : `${c.packets} packet${c.packets === 1 ? '' : 's'}`);
    const list = (l: readonly string[]): string => (l.length === 0 ? '(none)' : l.join(', '));
    if (!detailed) {
      const by = found.policies.ingress.length + found.policies.egress.length === 0 ? '' : ` by ${list([...new Set([...found.policies.ingress, ...found.policies.egress])].sort())}`;
      return { ok, lines: [`/status ${ref}: ${isolation}${by}${ok ? '' : ' (not what was expected)'}`] };
    }
    const expectedDrops = (expected.droppedSome ?? []).map((d) => `${d} drops counted`).join(', ');
    return {
      ok,
      lines: [
        `${ref} (${found.ip}, host veth ${found.interfaces.join(', ')}): ${isolation}${ok ? '' : ' (not what was expected)'}`,
        `ingress: isolated ${found.isolated.ingress ? 'yes' : 'no'}, policies ${list(found.policies.ingress)}, dropped ${dropped(found.dropped.ingress)}`,
        `egress:  isolated ${found.isolated.egress ? 'yes' : 'no'}, policies ${list(found.policies.egress)}, dropped ${dropped(found.dropped.egress)}${expectedDrops === '' ? '' : `   (expected: ${expectedDrops})`}`,
      ],
    };
  }

  private printDaemonLog(): void {
    const lines = this.lab?.node(DEMO_NODE.name).daemon?.lines ?? [];
    if (lines.length === 0) return;
    this.out('  last lines of the daemon log:');
    for (const line of lines.slice(-15)) this.out(`    ${line}`);
  }

  // -------------------------------------------------------------------------------------------
  // Teardown
  // -------------------------------------------------------------------------------------------

  /** Stops everything and deletes every namespace of this run; safe to call more than once. Whether all went. */
  teardown(): Promise<boolean> {
    this.teardownDone ??= this.doTeardown();
    return this.teardownDone;
  }

  private async doTeardown(): Promise<boolean> {
    const problems: string[] = [];
    const describe = (error: unknown): string => (error instanceof Error ? error.message : String(error));
    for (const server of this.servers.splice(0)) await server.stop().catch((e: unknown) => problems.push(`stopping an echo server: ${describe(e)}`));
    const lab = this.lab;
    this.lab = null;
    if (lab !== null) await lab.destroy().catch((e: unknown) => problems.push(`deleting the lab: ${describe(e)}`));
    // Anything of this run a failure left behind (the prefix is this run's alone).
    const stale = await removeStaleNamespaces(this.prefix).catch((e: unknown) => {
      problems.push(`sweeping ${this.prefix}-*: ${describe(e)}`);
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
