import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { namespace, pod, policy } from '../support/builders.js';
import { LabProcess as NetnsProcess } from '../../lib/lab/process.js';
import { DAEMON_NODE_FLAGS } from '../../daemon/runtime.js';
import { useNetns } from '../support/netns-fixture.js';
import { eventually } from '../support/eventually.js';

/**
 * `palisade daemon` as the real process it is on a node, in a throwaway network namespace, with a
 * fake API server process in the same namespace (driven by the test over a unix socket, which crosses
 * network namespaces). Also its command line: bad flags and an unreadable kubeconfig.
 */

const root = path.resolve(fileURLToPath(import.meta.url), '../../../..');
const MAIN = path.join(root, 'dist/daemon/main.js');
const FAKE_API = path.join(root, 'dist/lib/lab/api-server-main.js');

function admin(socket: string, route: string, body: unknown): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, path: `/fake/${route}`, method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`admin ${route}: HTTP ${res.statusCode}`))));
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}


describe('palisade daemon, the command', function () {
  this.timeout(60_000);

  it('exits 2 naming every bad flag and variable', async () => {
    await assert.rejects(promisify(execFile)(process.execPath, [MAIN, 'daemon', '--refresh-interval', 'often'], { env: { PALISADE_LOG_LEVEL: 'loud' } }), (error: { code?: number; stderr?: string }) => {
      assert.equal(error.code, 2);
      assert.match(error.stderr ?? '', /--refresh-interval "often": must be a duration/);
      assert.match(error.stderr ?? '', /PALISADE_LOG_LEVEL "loud"/);
      assert.match(error.stderr ?? '', /--node-name \(or NODE_NAME/);
      return true;
    });
  });

  it('exits 1 naming a kubeconfig it cannot read', async () => {
    await assert.rejects(promisify(execFile)(process.execPath, [MAIN, 'daemon', '--node-name', 'n', '--kubeconfig', '/nonexistent/kubeconfig']), (error: { code?: number; stderr?: string }) => {
      assert.equal(error.code, 1);
      assert.match(error.stderr ?? '', /cannot load the kubeconfig \/nonexistent\/kubeconfig/);
      return true;
    });
  });
});

describe('palisade daemon, the process, in a network namespace', function () {
  this.timeout(90_000);
  const ns = useNetns('paltest-daemonproc', { perTest: true });
  let dir = '';
  const processes: NetnsProcess[] = [];

  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'palisade-daemon-'));
  });

  afterEach(async () => {
    for (const p of processes.splice(0)) await p.stop('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });

  async function startApi(): Promise<{ socket: string; kubeconfig: string }> {
    const socket = path.join(dir, 'api.sock');
    const kubeconfig = path.join(dir, 'kubeconfig');
    const seed = path.join(dir, 'seed.yaml');
    const objects = [
      namespace('default'),
      pod('default', 'busybox1', { ip: '10.1.0.1', labels: { name: 'in' } }),
      pod('default', 'busybox2', { ip: '10.1.0.2', labels: { name: 'out' } }),
    ];
    await writeFile(seed, objects.map((o) => stringify(o)).join('---\n'));
    const api = NetnsProcess.start(ns(), [process.execPath, FAKE_API, '--port', '6443', '--socket', socket, '--kubeconfig-out', kubeconfig, '--seed', seed, '--bookmark-ms', '500']);
    processes.push(api);
    await api.waitFor(/^ready /);
    return { socket, kubeconfig };
  }

  function startDaemon(kubeconfig: string): NetnsProcess {
    const daemon = NetnsProcess.start(ns(), [process.execPath, MAIN, 'daemon', '--kubeconfig', kubeconfig, '--node-name', 'node-a', '--sync-delay', '20ms', '--refresh-interval', '1s', '--log-level', 'debug']);
    processes.push(daemon);
    return daemon;
  }

  const save = async () => ns().run(['iptables-nft-save', '-t', 'mangle']);

  it('enforces what the API server says, logs JSON, stops on SIGTERM leaving its rules, and a new process takes over without rewriting them', async () => {
    const { socket, kubeconfig } = await startApi();
    const first = startDaemon(kubeconfig);
    await eventually('the hook', async () => assert.match(await save(), /-j pal-FORWARD/));
    await admin(socket, 'apply', policy('default', 'deny-all', { podSelector: {}, policyTypes: ['Ingress', 'Egress'] }));
    await eventually('the deny-all chain', async () => assert.match(await save(), /policy default\/deny-all/));
    const started = JSON.parse(await first.waitFor(/"msg":"palisade started"/)) as { level: number; node: string; status: string };
    assert.equal(started.node, 'node-a');
    assert.equal(started.status, '127.0.0.1:9710');

    assert.equal(await first.stop('SIGTERM'), 0);
    assert.ok(first.lines.some((l) => /"msg":"stopping; the rules stay in force"/.test(l)));
    const left = await save();
    assert.match(left, /policy default\/deny-all/, 'the rules outlive the process');

    const second = startDaemon(kubeconfig);
    await second.waitFor(/"msg":"ready: every watch has listed and the rules are in place"/);
    assert.deepEqual(second.lines.filter((l) => /"msg":"dataplane written"/.test(l)), [], 'taking over wrote nothing');
    await admin(socket, 'apply', policy('default', 'allow-out-to-in', { podSelector: {}, ingress: [{ from: [{ podSelector: { matchLabels: { name: 'out' } } }] }] }));
    await eventually('the new policy', async () => assert.match(await save(), /default\/allow-out-to-in ingress rule 0/));
    const writes = second.lines.filter((l) => /"msg":"dataplane written"/.test(l));
    assert.equal(writes.length, 1, `the second process wrote only for the new policy:\n${writes.join('\n')}`);
  });

  /**
   * The DaemonSet grants NET_ADMIN and NET_RAW and nothing else. Run as root with exactly a given
   * capability set (setpriv's bounding set), the daemon must enforce and log drops with the
   * manifest's set on both backends; NET_RAW is there because iptables-legacy (Amazon Linux 2) opens a
   * raw socket: with NET_ADMIN alone, legacy fails and says so, while nft, ipset, conntrack and ulogd
   * need nothing more.
   */
  const withCapabilities = (caps: readonly string[], argv: readonly string[]): string[] => ['setpriv', `--bounding-set=-all,${caps.map((c) => `+${c}`).join(',')}`, '--inh-caps=-all', '--', ...argv];
  const manifestCaps = async (): Promise<string[]> => {
    const manifest = await readFile(path.join(root, 'manifests/daemonset.yaml'), 'utf8');
    const added = /add: \[([^\]]*)\]/.exec(manifest)?.[1] ?? '';
    return added.split(',').map((c) => c.trim().replace(/"/g, '').toLowerCase()).filter((c) => c !== '');
  };
  for (const backend of ['nft', 'legacy'] as const) {
    it(`enforces and logs drops with only the DaemonSet's capabilities on the ${backend} backend`, async () => {
      const caps = await manifestCaps();
      assert.deepEqual(caps, ['net_admin', 'net_raw']);
      const { socket, kubeconfig } = await startApi();
      const daemon = NetnsProcess.start(ns(), withCapabilities(caps, [process.execPath, MAIN, 'daemon', '--kubeconfig', kubeconfig, '--node-name', 'node-a', '--iptables-backend', backend, '--sync-delay', '20ms']));
      processes.push(daemon);
      await daemon.waitFor(/"msg":"ready: every watch has listed and the rules are in place"/);
      await daemon.waitFor(/"msg":"drop log reading NFLOG"/);
      await admin(socket, 'apply', policy('default', 'deny-all', { podSelector: {}, policyTypes: ['Ingress'] }));
      await eventually('the deny-all chain', async () => assert.match(await ns().run([`iptables-${backend}-save`, '-t', 'mangle']), /policy default\/deny-all/));
    });
  }

  it('fails on the legacy backend without NET_RAW, naming the permission, and enforces on nft with NET_ADMIN alone', async () => {
    const { kubeconfig } = await startApi();
    const legacy = NetnsProcess.start(ns(), withCapabilities(['net_admin'], [process.execPath, MAIN, 'daemon', '--kubeconfig', kubeconfig, '--node-name', 'node-a', '--iptables-backend', 'legacy', '--sync-delay', '20ms', '--status-addr', '127.0.0.1:9720', '--metrics-addr', '127.0.0.1:9721']));
    processes.push(legacy);
    await legacy.waitFor(/Permission denied|unable to initialize table/);
    const nft = NetnsProcess.start(ns(), withCapabilities(['net_admin'], [process.execPath, MAIN, 'daemon', '--kubeconfig', kubeconfig, '--node-name', 'node-b', '--iptables-backend', 'nft', '--sync-delay', '20ms', '--drop-log-group', '30']));
    processes.push(nft);
    await nft.waitFor(/"msg":"ready: every watch has listed and the rules are in place"/);
    await nft.waitFor(/"msg":"drop log reading NFLOG"/);
  });

  // The package's bin (the file run through its shebang), `node dist/daemon/main.js`, and node with
  // flags of its own: each way the daemon ends up as one process, with its V8 settings.
  const launchers: readonly [string, (kubeconfig: string) => string[]][] = [
    ['node dist/daemon/main.js daemon', (k) => [process.execPath, MAIN, 'daemon', '--kubeconfig', k, '--node-name', 'node-a']],
    ['the package bin', (k) => ['env', `PATH=${path.dirname(process.execPath)}:/usr/sbin:/usr/bin:/sbin:/bin`, MAIN, 'daemon', '--kubeconfig', k, '--node-name', 'node-a']],
    ['node with flags of its own', (k) => [process.execPath, '--stack-size=2000', MAIN, 'daemon', '--kubeconfig', k, '--node-name', 'node-a']],
  ];
  for (const [how, argv] of launchers) {
    it(`sets up its own V8 settings when started as ${how}, in the same process`, async () => {
      const { kubeconfig } = await startApi();
      const daemon = NetnsProcess.start(ns(), argv(kubeconfig));
      processes.push(daemon);
      const line = JSON.parse(await daemon.waitFor(/"msg":"V8 settings in place"/)) as { pid: number; nodeFlags: string[] };
      assert.deepEqual(line.nodeFlags, DAEMON_NODE_FLAGS);
      await daemon.waitFor(/"msg":"ready: every watch has listed/);
      // The process kept its id: it replaced itself rather than starting a child.
      const pids = (await ns().run(['pgrep', '-f', `main.js daemon --kubeconfig ${kubeconfig}`])).trim().split('\n');
      assert.deepEqual(pids, [String(line.pid)]);
      const cmdline = (await readFile(`/proc/${line.pid}/cmdline`, 'utf8')).split('\0');
      for (const flag of DAEMON_NODE_FLAGS) assert.ok(cmdline.includes(flag), `${flag} in ${cmdline.join(' ')}`);
    });
  }
});
