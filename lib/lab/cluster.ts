import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { PalisadeError } from '../errors.js';
import { NetworkNamespace } from '../netns.js';
import { PodNode } from '../pod-network.js';
import type { PodHandle, PodSpec } from '../pod-network.js';
import { LabApiClient } from './admin-client.js';
import { LabKubeProxy } from './kube-proxy.js';
import type { LabKubeProxyOptions } from './kube-proxy.js';
import { SERVICE_CIDR } from './services.js';
import { LabProcess } from './process.js';
import { ProjectedTokenVolume } from './projected-token.js';
import { labKubeconfig } from './api-server.js';
import { PALISADE_NODE_TAINT_POLICY } from './node-admission.js';

/**
 * A cluster made of network namespaces on one machine, wired as EKS nodes with the AWS VPC CNI:
 *
 *   external host ──ext── node A ════ link ════ node B
 *   203.0.113.10          │ pods (eni… veths)    │ pods
 *                         └ lab API server on A's link address, reached by both nodes' daemons
 *
 * Each node forwards between its pods, the link and (on A) the external host; each has a route to
 * the other's pod CIDR over the link. The lab API server runs inside node A; the program driving the
 * lab talks to it over a unix socket, and to each node's status endpoint through `ip netns exec`.
 * One real `palisade daemon` process per node. With `kubeProxy`, every node also gets kube-proxy's
 * rules for the Services handed to `lab.kubeProxy` (kube-proxy.ts). Nothing here touches the
 * machine's own namespace.
 *
 * With `rotatingToken`, the daemons authenticate as a pod's service account does: the kubeconfig they
 * get names a token file (`tokenFile`) in a volume the lab writes as kubelet writes a projected token,
 * and the API server accepts only the tokens the lab has issued and not yet expired (rotateToken,
 * expireOldTokens).
 *
 * With `nodeTokens`, each node's daemon gets a token of its own, bound to palisade's service account
 * and to that node, as a bound service-account token is (Kubernetes 1.30 and later), in a kubeconfig
 * of its own: the API server then judges the daemon's node PATCHes by palisade's admission policy,
 * so a daemon can take the startup taint off its own node and nothing else.
 */

export interface LabNodeSpec {
  readonly name: string;
  /** Address on the node link, e.g. 172.31.0.1; the lab API server listens on the first node's. */
  readonly address: string;
  /** Pods on this node get addresses from here, e.g. 10.1.1.0/24. */
  readonly podCidr: string;
}

export interface LabOptions {
  /** Prefix of every namespace the lab creates. */
  readonly prefix: string;
  readonly nodes: readonly LabNodeSpec[];
  /** An outside host beyond the first node, for ipBlock cases. */
  readonly externalAddress?: string;
  /** Extra flags for every daemon. */
  readonly daemonArgs?: readonly string[];
  /** Authenticate with a rotatable token file rather than a fixed token (see above). */
  readonly rotatingToken?: boolean;
  /** A token per node, bound to palisade's service account and the node (see above); not with rotatingToken. */
  readonly nodeTokens?: boolean;
  /** kube-proxy on every node, programmed (with no Services yet) before create() returns. */
  readonly kubeProxy?: LabKubeProxyOptions;
}

export const EXTERNAL_GATEWAY = '203.0.113.1';
/** Where a node routes the service range (see routeServiceRange). */
const SERVICE_SINK = 'svc0';
const SINK_NEXT_HOP = '169.254.255.1';
const SINK_MAC = '02:00:00:00:00:01';
const LINK_PREFIX = 24;
const API_PORT = 6443;
const MAIN_JS = path.resolve(fileURLToPath(import.meta.url), '../../../daemon/main.js');
const API_MAIN_JS = path.resolve(fileURLToPath(import.meta.url), '../api-server-main.js');

export class LabNode {
  readonly spec: LabNodeSpec;
  readonly pods: PodNode;
  daemon: LabProcess | null = null;

  constructor(spec: LabNodeSpec, pods: PodNode) {
    this.spec = spec;
    this.pods = pods;
  }

  get netns(): NetworkNamespace {
    return this.pods.netns;
  }
}

export class Lab {
  readonly nodes: readonly LabNode[];
  readonly external: NetworkNamespace | null;
  readonly api: LabApiClient;
  readonly kubeconfigPath: string;
  /** The daemons' token volume, when the lab was made with `rotatingToken`. */
  readonly tokenVolume: ProjectedTokenVolume | null;
  private readonly proxy: LabKubeProxy | null;
  private readonly apiProcess: LabProcess;
  private readonly dir: string;
  private readonly trunks = new Map<string, { router: NetworkNamespace; routerEnd: string; vlanMac: string }>();
  private readonly options: LabOptions;
  /** Tokens issued and not yet expired, oldest first; the last one is in the token volume. */
  private tokens: string[];
  /** Each node's own token and kubeconfig, when the lab was made with `nodeTokens`. */
  private readonly nodeCredentials = new Map<string, { token: string; kubeconfig: string }>();

  private constructor(options: LabOptions, nodes: LabNode[], external: NetworkNamespace | null, proxy: LabKubeProxy | null, apiProcess: LabProcess, dir: string, auth: { volume: ProjectedTokenVolume | null; tokens: string[] }) {
    this.options = options;
    this.proxy = proxy;
    this.tokens = auth.tokens;
    this.tokenVolume = auth.volume;
    this.nodes = nodes;
    this.external = external;
    this.apiProcess = apiProcess;
    this.dir = dir;
    this.api = new LabApiClient(path.join(dir, 'api.sock'));
    this.kubeconfigPath = path.join(dir, 'kubeconfig');
  }

  static async create(options: LabOptions): Promise<Lab> {
    const dir = await mkdtemp(path.join(tmpdir(), `${options.prefix}-`));
    const nodes: LabNode[] = [];
    let external: NetworkNamespace | null = null;
    let api: LabProcess | null = null;
    try {
      for (const spec of options.nodes) nodes.push(new LabNode(spec, await PodNode.create(`${options.prefix}-${spec.name}`)));
      await linkNodes(nodes);
      // A lone node has no link; its address still has to exist for the API server to listen on.
      if (nodes.length === 1) await nodes[0]!.netns.run(['ip', 'addr', 'add', `${nodes[0]!.spec.address}/32`, 'dev', 'lo']);
      if (options.externalAddress !== undefined) external = await attachExternal(options.prefix, options.externalAddress, nodes);
      let proxy: LabKubeProxy | null = null;
      if (options.kubeProxy !== undefined) {
        for (const node of nodes) await routeServiceRange(node.netns);
        proxy = new LabKubeProxy(nodes.map((n) => ({ name: n.spec.name, runner: n.netns })), options.kubeProxy);
        await proxy.sync();
      }
      const volume = options.rotatingToken === true ? new ProjectedTokenVolume(path.join(dir, 'serviceaccount')) : null;
      const tokens = volume === null ? [] : [newToken()];
      const authArgs = volume === null ? [] : ['--token', tokens[0]!, '--kubeconfig-token-file', volume.tokenPath];
      if (volume !== null) await volume.write(tokens[0]!);
      api = LabProcess.start(nodes[0]!.netns, [process.execPath, API_MAIN_JS, '--host', nodes[0]!.spec.address, '--port', String(API_PORT), '--socket', path.join(dir, 'api.sock'), '--kubeconfig-out', path.join(dir, 'kubeconfig'), '--bookmark-ms', '1000', ...authArgs]);
      await api.waitFor(/^ready /);
      const lab = new Lab(options, nodes, external, proxy, api, dir, { volume, tokens });
      if (options.nodeTokens === true) await lab.issueNodeTokens(`http://${nodes[0]!.spec.address}:${API_PORT}`);
      return lab;
    } catch (error) {
      await api?.stop('SIGKILL');
      for (const node of nodes) await node.pods.destroy().catch(() => undefined);
      await external?.destroy().catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
      throw error;
    }
  }

  private async issueNodeTokens(serverUrl: string): Promise<void> {
    if (this.tokenVolume !== null) throw new PalisadeError('LAB', 'nodeTokens and rotatingToken do not go together');
    for (const node of this.nodes) {
      const token = newToken();
      await this.api.bindToken(token, { username: PALISADE_NODE_TAINT_POLICY.username, nodeName: node.spec.name });
      const kubeconfig = path.join(this.dir, `kubeconfig-${node.spec.name}`);
      await writeFile(kubeconfig, labKubeconfig(serverUrl, { token }), { mode: 0o600 });
      this.nodeCredentials.set(node.spec.name, { token, kubeconfig });
    }
  }

  /** The token bound to palisade's service account and `nodeName`; only for a lab made with `nodeTokens`. */
  nodeToken(nodeName: string): string {
    const credentials = this.nodeCredentials.get(nodeName);
    if (credentials === undefined) throw new PalisadeError('LAB', `no token of ${nodeName}'s own: make the lab with nodeTokens`);
    return credentials.token;
  }

  node(name: string): LabNode {
    const found = this.nodes.find((n) => n.spec.name === name);
    if (found === undefined) throw new PalisadeError('LAB', `no lab node ${name}`);
    return found;
  }

  /** The nodes' kube-proxy; only for a lab created with the `kubeProxy` option. */
  get kubeProxy(): LabKubeProxy {
    if (this.proxy === null) throw new PalisadeError('LAB', 'this lab was created without kube-proxy (LabOptions.kubeProxy)');
    return this.proxy;
  }

  /** Plumbs a pod into its node; the matching Pod object is the caller's to apply. */
  async addPod(nodeName: string, spec: PodSpec): Promise<PodHandle> {
    const handle = await this.node(nodeName).pods.addPod(spec);
    if (spec.wiring?.kind === 'branch-eni') {
      const trunk = this.trunks.get(`${nodeName}/${spec.wiring.vlanLink}`);
      if (trunk === undefined) throw new PalisadeError('LAB', `no VPC VLAN ${spec.wiring.vlanLink} on ${nodeName}: call addVpcVlan first`);
      // The VPC delivers to the branch ENI without asking: the router side knows where the pod is.
      await trunk.router.run(['ip', 'neigh', 'replace', spec.ip, 'lladdr', trunk.vlanMac, 'dev', trunk.routerEnd, 'nud', 'permanent']);
    }
    return handle;
  }

  /**
   * A trunk ENI's VLAN, as the VPC CNI sets one up for branch-ENI pods (security groups for pods):
   * the link vlan.eth.<id> on the node, and the VPC behind it, for which `router` (another node)
   * stands in, holding the subnet's gateway and routing the subnet back. This kernel has no VLAN
   * links, so the link is a veth of the same name; routing and firewall see the same thing.
   */
  async addVpcVlan(nodeName: string, routerName: string, vlanId: number, gatewayCidr: string): Promise<{ vlanLink: string; gateway: string; table: number }> {
    const node = this.node(nodeName);
    const router = this.node(routerName);
    const vlanLink = `vlan.eth.${vlanId}`;
    const routerEnd = `trunk${vlanId}`;
    const [gateway, prefixLength] = gatewayCidr.split('/') as [string, string];
    const subnet = cidrOf(gateway, Number(prefixLength));
    await node.netns.run(['ip', 'link', 'add', vlanLink, 'type', 'veth', 'peer', 'name', routerEnd]);
    await node.netns.run(['ip', 'link', 'set', routerEnd, 'netns', router.netns.name]);
    await node.netns.run(['ip', 'link', 'set', vlanLink, 'up']);
    await router.netns.run(['ip', 'address', 'add', gatewayCidr, 'dev', routerEnd]);
    await router.netns.run(['ip', 'link', 'set', routerEnd, 'up']);
    const routerMac = JSON.parse(await router.netns.run(['ip', '-j', 'link', 'show', routerEnd])) as { address: string }[];
    const vlanMac = JSON.parse(await node.netns.run(['ip', '-j', 'link', 'show', vlanLink])) as { address: string }[];
    await node.netns.run(['ip', 'neigh', 'replace', gateway, 'lladdr', routerMac[0]!.address, 'dev', vlanLink, 'nud', 'permanent']);
    // Everything else reaches the branch subnet through the VPC, as on EKS: no node routes it to its pods directly.
    for (const other of this.nodes) if (other !== router) await other.netns.run(['ip', 'route', 'replace', subnet, 'via', router.spec.address]);
    this.trunks.set(`${nodeName}/${vlanLink}`, { router: router.netns, routerEnd, vlanMac: vlanMac[0]!.address });
    return { vlanLink, gateway, table: 100 + vlanId };
  }

  /**
   * A link of the node's own with addresses on it, as kube-proxy's kube-ipvs0 or node-local DNS's
   * nodelocaldns are: dummy links elsewhere, a veth (peer left unplugged) on this kernel.
   */
  async addNodeLink(nodeName: string, name: string, addresses: readonly string[] = []): Promise<void> {
    const node = this.node(nodeName);
    await node.netns.run(['ip', 'link', 'add', name, 'type', 'veth', 'peer', 'name', `${name.slice(0, 12)}-p`]);
    for (const address of addresses) await node.netns.run(['ip', 'address', 'add', `${address}/32`, 'dev', name]);
    await node.netns.run(['ip', 'link', 'set', name, 'up']);
  }

  async removeNodeLink(nodeName: string, name: string): Promise<void> {
    await this.node(nodeName).netns.run(['ip', 'link', 'del', name]);
  }

  /** Starts the node's `palisade daemon`, waiting until it reports it has started. */
  async startDaemon(nodeName: string, extraArgs: readonly string[] = []): Promise<LabProcess> {
    const node = this.node(nodeName);
    if (node.daemon?.running === true) throw new PalisadeError('LAB', `the daemon on ${nodeName} is already running`);
    const kubeconfig = this.nodeCredentials.get(nodeName)?.kubeconfig ?? this.kubeconfigPath;
    // Each node its own temporary directory, as a real node has its own /tmp: the daemon keeps its ulogd's
    // configuration, socket and pid file there under a name made from the node's name alone, so two labs
    // at once with a node-a each (the demo beside a test) would otherwise share them, and each daemon
    // would end the other's ulogd as one its predecessor left behind and take over its socket.
    const tmp = path.join(this.dir, `tmp-${nodeName}`);
    await mkdir(tmp, { recursive: true, mode: 0o700 });
    node.daemon = LabProcess.start(node.netns, [process.execPath, MAIN_JS, 'daemon', '--kubeconfig', kubeconfig, '--node-name', nodeName, '--sync-delay', '20ms', '--refresh-interval', '2s', ...(this.options.daemonArgs ?? []), ...extraArgs], { TMPDIR: tmp });
    await node.daemon.waitFor(/"msg":"palisade started"/);
    return node.daemon;
  }

  async stopDaemon(nodeName: string, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    const node = this.node(nodeName);
    const code = await node.daemon?.stop(signal);
    node.daemon = null;
    return code ?? null;
  }

  /** GET on the node's status endpoint (127.0.0.1 inside the node), as an operator would with curl on the node. */
  status(nodeName: string, pathAndQuery: string): Promise<{ status: number; body: string }> {
    return this.get(nodeName, 9710, pathAndQuery);
  }

  /** The node's Prometheus metrics, as a scrape inside the node would read them. */
  async metrics(nodeName: string): Promise<string> {
    const { status, body } = await this.get(nodeName, 9711, '/metrics');
    if (status !== 200) throw new PalisadeError('LAB', `GET /metrics on ${nodeName}: HTTP ${status}: ${body.slice(0, 200)}`);
    return body;
  }

  private async get(nodeName: string, port: number, pathAndQuery: string): Promise<{ status: number; body: string }> {
    const script = 'fetch(process.argv[1]).then(async (r) => process.stdout.write(JSON.stringify({ status: r.status, body: await r.text() })), (e) => { process.stdout.write(JSON.stringify({ status: 0, body: String(e) })); })';
    const out = await this.node(nodeName).netns.run([process.execPath, '-e', script, `http://127.0.0.1:${port}${pathAndQuery}`]);
    return JSON.parse(out) as { status: number; body: string };
  }

  async waitReady(nodeName: string, timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if ((await this.status(nodeName, '/readyz')).status === 200) return;
      if (Date.now() > deadline) throw new PalisadeError('LAB', `the daemon on ${nodeName} did not become ready within ${timeoutMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  /**
   * The API server goes away (watches break, connections are refused) and comes back after `downMs`
   * with the same objects and resourceVersions, as a real one does after a restart.
   */
  async restartApiServer(downMs: number): Promise<void> {
    await this.api.outage(downMs);
  }

  /**
   * Issues a new token and writes it into the token volume, as kubelet does at 80% of a token's life.
   * The API server accepts it before it is written (it issued it); the older ones stay valid until
   * expireOldTokens, as they do until they expire.
   */
  async rotateToken(): Promise<string> {
    const volume = this.rotatingVolume();
    const token = newToken();
    await this.api.setTokens([...this.tokens, token]);
    this.tokens.push(token);
    await volume.write(token);
    return token;
  }

  /**
   * Only the newest token is accepted from now on. With `closeRefusedWatches`, watches opened with an
   * older one end cleanly, as they would at their timeout (a real API server never cuts a watch when
   * its token expires: it authenticated it once, at its start). Resolves with how many ended.
   */
  async expireOldTokens(options: { closeRefusedWatches?: boolean } = {}): Promise<number> {
    this.rotatingVolume();
    this.tokens = this.tokens.slice(-1);
    return this.api.setTokens(this.tokens, options);
  }

  private rotatingVolume(): ProjectedTokenVolume {
    if (this.tokenVolume === null) throw new PalisadeError('LAB', 'this lab was made without rotatingToken');
    return this.tokenVolume;
  }

  async destroy(): Promise<void> {
    const failures: unknown[] = [];
    for (const node of this.nodes) await node.daemon?.stop('SIGKILL').catch((e: unknown) => failures.push(e));
    await this.apiProcess.stop('SIGKILL').catch((e: unknown) => failures.push(e));
    for (const node of this.nodes) await node.pods.destroy().catch((e: unknown) => failures.push(e));
    await this.external?.destroy().catch((e: unknown) => failures.push(e));
    await rm(this.dir, { recursive: true, force: true });
    if (failures.length > 0) throw new AggregateError(failures, 'lab teardown failed in part');
  }
}

function cidrOf(address: string, prefixLength: number): string {
  const value = address.split('.').reduce((n, part) => n * 256 + Number(part), 0);
  const base = prefixLength === 0 ? 0 : value - (value % 2 ** (32 - prefixLength));
  return `${[24, 16, 8, 0].map((shift) => Math.floor(base / 2 ** shift) % 256).join('.')}/${prefixLength}`;
}

/** A veth between consecutive nodes, each node routing the others' pod CIDRs over it. */
async function linkNodes(nodes: readonly LabNode[]): Promise<void> {
  for (let i = 1; i < nodes.length; i++) {
    const [a, b] = [nodes[0]!, nodes[i]!];
    const here = `lab${i}a`;
    const there = `lab${i}b`;
    await a.netns.run(['ip', 'link', 'add', here, 'type', 'veth', 'peer', 'name', there]);
    await a.netns.run(['ip', 'link', 'set', there, 'netns', b.netns.name]);
    await a.netns.run(['ip', 'addr', 'add', `${a.spec.address}/${LINK_PREFIX}`, 'dev', here]);
    await b.netns.run(['ip', 'addr', 'add', `${b.spec.address}/${LINK_PREFIX}`, 'dev', there]);
    await a.netns.run(['ip', 'link', 'set', here, 'up']);
    await b.netns.run(['ip', 'link', 'set', there, 'up']);
    await a.netns.run(['ip', 'route', 'add', b.spec.podCidr, 'via', b.spec.address]);
    await b.netns.run(['ip', 'route', 'add', a.spec.podCidr, 'via', a.spec.address]);
  }
}

/**
 * A real node's default route leads out of it, so a packet to a ClusterIP that kube-proxy did not
 * DNAT is still forwarded, and meets kube-proxy's REJECT for Services without endpoints (and
 * palisade's hook) on the way. Lab nodes have no default route: the service range goes out of one end
 * of a veth pair instead, addressed to a MAC address nobody holds, so the other end drops it unseen
 * (no dummy interfaces needed, no loop, no ICMP).
 */
async function routeServiceRange(node: NetworkNamespace): Promise<void> {
  await node.run(['ip', 'link', 'add', SERVICE_SINK, 'type', 'veth', 'peer', 'name', `${SERVICE_SINK}p`]);
  await node.run(['ip', 'link', 'set', `${SERVICE_SINK}p`, 'up']);
  await node.run(['ip', 'link', 'set', SERVICE_SINK, 'up']);
  await node.run(['ip', 'neigh', 'add', SINK_NEXT_HOP, 'lladdr', SINK_MAC, 'dev', SERVICE_SINK, 'nud', 'permanent']);
  await node.run(['ip', 'route', 'add', SERVICE_CIDR, 'via', SINK_NEXT_HOP, 'dev', SERVICE_SINK, 'onlink']);
}

/** The outside host hangs off the first node; the other nodes reach it through the first. */
async function attachExternal(prefix: string, address: string, nodes: readonly LabNode[]): Promise<NetworkNamespace> {
  const external = await NetworkNamespace.create(`${prefix}-ext`);
  const first = nodes[0]!;
  await first.netns.run(['ip', 'link', 'add', 'ext0', 'type', 'veth', 'peer', 'name', 'ext0p']);
  await first.netns.run(['ip', 'link', 'set', 'ext0p', 'netns', external.name]);
  await first.netns.run(['ip', 'addr', 'add', `${EXTERNAL_GATEWAY}/24`, 'dev', 'ext0']);
  await first.netns.run(['ip', 'link', 'set', 'ext0', 'up']);
  await external.run(['ip', 'link', 'set', 'ext0p', 'name', 'eth0']);
  await external.run(['ip', 'addr', 'add', `${address}/24`, 'dev', 'eth0']);
  await external.run(['ip', 'link', 'set', 'eth0', 'up']);
  await external.run(['ip', 'route', 'add', 'default', 'via', EXTERNAL_GATEWAY]);
  for (const node of nodes.slice(1)) await node.netns.run(['ip', 'route', 'add', `${address}/32`, 'via', first.spec.address]);
  return external;
}

function newToken(): string {
  return `lab-${randomBytes(18).toString('base64url')}`;
}
