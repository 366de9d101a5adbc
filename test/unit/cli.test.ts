import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { runCli } from '../../daemon/cli.js';

/** The command line, run in-process with captured output, and once as a real process. */

const root = path.resolve(fileURLToPath(import.meta.url), '../../../..');
const seed = path.join(root, 'test/fixtures/seed/cluster.yaml');
const example = (name: string) => path.join(root, 'manifests/examples', `${name}.yaml`);

async function run(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await runCli(argv, { stdout: (t) => void (stdout += t), stderrLine: (l) => void (stderr += `${l}\n`), env: {} });
  return { code, stdout, stderr };
}

describe('palisade compile', () => {
  let dir = '';
  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'palisade-cli-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('prints the ipset text then the iptables-restore text', async () => {
    const { code, stdout } = await run('compile', '--node-name', 'node-a', seed, example('allow-out-to-in'));
    assert.equal(code, 0);
    assert.match(stdout, /^# ipset restore\ncreate pal-p-/);
    assert.match(stdout, /# iptables-restore --noflush\n\*mangle\n/);
    assert.match(stdout, /-A pal-pi-\S+ -m set --match-set pal-p-\S+ src -m comment --comment "pal:\S+ default\/allow-out-to-in ingress rule 0" -g pal-allow/);
  });

  it('writes ipsets.restore and iptables.restore with --out', async () => {
    const { code, stderr } = await run('compile', '--node-name', 'node-a', '--out', dir, seed, example('deny-all'));
    assert.equal(code, 0);
    assert.match(stderr, /wrote .*ipsets\.restore .*iptables\.restore/);
    assert.match(await readFile(path.join(dir, 'iptables.restore'), 'utf8'), /^\*mangle\n[\s\S]*COMMIT\n$/);
    assert.equal(await readFile(path.join(dir, 'ipsets.restore'), 'utf8'), '');
  });

  it('honours --interface-prefix and --chain-prefix', async () => {
    const { stdout } = await run('compile', '--node-name', 'node-a', '--interface-prefix', 'cali', '--chain-prefix', 'pz', seed, example('deny-all'));
    assert.match(stdout, /-A pz-FORWARD -i cali\+/);
    assert.doesNotMatch(stdout, / pal-/);
  });

  it('compiles ClusterNetworkPolicies into tier chains of the pods they select', async () => {
    const cnp = path.join(dir, 'cnp.yaml');
    await writeFile(cnp, 'apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata:\n  name: x\nspec:\n  tier: Admin\n  priority: 1\n  subject:\n    namespaces: {}\n  ingress:\n  - action: Deny\n    from:\n    - namespaces: {}\n');
    const { code, stdout, stderr } = await run('compile', '--node-name', 'node-a', seed, cnp);
    assert.equal(code, 0);
    assert.equal(stderr, '');
    assert.match(stdout, /-A pal-at-\S+ -m comment --comment "pal:\S+ admin ClusterNetworkPolicy x" -j pal-ci-\S+/);
    assert.match(stdout, /-A pal-ci-\S+ -m set --match-set pal-p-\S+ src -m comment --comment "pal:\S+ admin x ingress rule 0" -g pal-cd-\S+/);
    assert.match(stdout, /-A pal-cd-\S+ .*-j NFLOG --nflog-prefix pal:cnp:in:\S+/);
  });

  it('fails naming a file it cannot read', async () => {
    const { code, stderr } = await run('compile', '--node-name', 'node-a', path.join(dir, 'missing.yaml'));
    assert.equal(code, 1);
    assert.match(stderr, /missing\.yaml: cannot read: no such file or directory/);
  });

  it('fails on a YAML error with the file and line', async () => {
    const file = path.join(dir, 'broken.yaml');
    await writeFile(file, 'apiVersion: v1\nkind: Pod\nmetadata:\n  name: [unclosed\n');
    const { code, stderr } = await run('compile', '--node-name', 'node-a', file);
    assert.equal(code, 1);
    assert.match(stderr, /broken\.yaml:\d+: /);
  });

  it('fails on an invalid object naming its kind, namespace, name, field and origin', async () => {
    const file = path.join(dir, 'bad.yaml');
    await writeFile(file, 'apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow-all, namespace: default}\nspec:\n  podSelector: {}\n  ingress: {}\n');
    const { code, stderr, stdout } = await run('compile', '--node-name', 'node-a', file);
    assert.equal(code, 1);
    assert.equal(stdout, '');
    assert.match(stderr, /bad\.yaml:1: error: NetworkPolicy default\/allow-all field spec\.ingress: ingress must be a list of rules/);
  });

  it('warns about an IPv6 CIDR and still compiles the rest', async () => {
    const file = path.join(dir, 'v6.yaml');
    await writeFile(file, 'apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: mixed, namespace: default}\nspec:\n  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: "fd00::/8"}\n    - ipBlock: {cidr: "10.0.0.0/8"}\n');
    const { code, stderr, stdout } = await run('compile', '--node-name', 'node-a', seed, file);
    assert.equal(code, 0);
    assert.match(stderr, /warning: NetworkPolicy default\/mixed field spec\.ingress\[0\]\.from\[0\]\.ipBlock\.cidr: IPv6 CIDR fd00::\/8 ignored/);
    assert.match(stdout, /add pal-n-\S+ 10\.0\.0\.0\/8/);
  });

  const usage: readonly [string, string[], RegExp][] = [
    ['an unknown flag', ['--nodename', 'x', seed], /Unknown option '--nodename'/],
    ['a missing node name', [seed], /--node-name is required/],
    ['an allow mark that is not a number', ['--node-name', 'a', '--allow-mark', 'lots', seed], /--allow-mark "lots": not a number/],
    ['an allow mark kube-proxy uses', ['--node-name', 'a', '--allow-mark', '0x4000', seed], /clashes with the kube-proxy masquerade mark/],
    ['no input files', ['--node-name', 'a'], /give at least one manifest file or directory/],
  ];
  for (const [name, args, message] of usage) {
    it(`exits 2 with usage for ${name}`, async () => {
      const { code, stderr } = await run('compile', ...args);
      assert.equal(code, 2);
      assert.match(stderr, message);
      assert.match(stderr, /Usage: palisade compile/);
    });
  }
});

describe('palisade explain', () => {
  it('explains a denied connection direction by direction', async () => {
    const { code, stdout } = await run('explain', '--from', 'default/busybox1', '--to', 'default/busybox2', '--port', '80', seed, example('allow-out-to-in'));
    assert.equal(code, 0);
    assert.equal(stdout, [
      'default/busybox1 (192.168.48.252) -> default/busybox2 (192.168.48.17) TCP/80: DENIED',
      '  egress  DENIED   default/busybox1 is isolated for egress by default/allow-out-to-in and no rule allows this packet',
      '  ingress DENIED   default/busybox2 is isolated for ingress by default/allow-out-to-in and no rule allows this packet',
      '  assuming a node\'s own addresses are the InternalIP addresses of its Node object and the addresses of its hostNetwork pods; on the node itself palisade counts every local address too (node-local DNS on 169.254.20.10, for one): ask the daemon\'s /explain there',
      '',
    ].join('\n'));
  });

  it('prints one JSON object whose allowed field is the verdict', async () => {
    const { stdout } = await run('explain', '--from', '192.168.48.17', '--to', 'default/busybox1', '--protocol', 'icmp', '--output', 'json', seed, example('allow-out-to-in'));
    const result = JSON.parse(stdout) as { allowed: boolean; egress: { allowedBy: { policy: string; rule: number }[] }; from: { pod: string } };
    assert.equal(result.allowed, true);
    assert.equal(result.from.pod, 'default/busybox2');
    assert.deepEqual(result.egress.allowedBy, [{ policy: 'default/allow-out-to-in', rule: 0 }]);
  });

  it('shows what an audit policy would do under the verdict it leaves alone', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'palisade-cli-'));
    try {
      const audit = path.join(dir, 'audit.yaml');
      const denyAll = await readFile(example('deny-all'), 'utf8');
      await writeFile(audit, denyAll.replace(/name: deny-all\n/, 'name: deny-all\n  annotations:\n    palisade.io/audit: "true"\n'));
      const { code, stdout } = await run('explain', '--from', 'default/busybox1', '--to', 'default/busybox2', '--port', '80', seed, audit);
      assert.equal(code, 0);
      assert.deepEqual(stdout.split('\n').slice(0, 5), [
        'default/busybox1 (192.168.48.252) -> default/busybox2 (192.168.48.17) TCP/80: ALLOWED',
        '  egress  allowed  no policy isolates default/busybox1 for egress',
        '          audit: would deny  audit policies default/deny-all would deny this packet were they enforced (audit, not enforced: default/deny-all)',
        '  ingress allowed  no policy isolates default/busybox2 for ingress',
        '          audit: would deny  audit policies default/deny-all would deny this packet were they enforced (audit, not enforced: default/deny-all)',
      ]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('evaluates ClusterNetworkPolicies in the manifests and names the tier, policy and rule that decide', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'palisade-cli-'));
    try {
      const cnp = path.join(dir, 'cnp.yaml');
      await writeFile(cnp, [
        'apiVersion: policy.networking.k8s.io/v1alpha2',
        'kind: ClusterNetworkPolicy',
        'metadata:',
        '  name: block-imds',
        'spec:',
        '  tier: Admin',
        '  priority: 10',
        '  subject:',
        '    namespaces: {}',
        '  egress:',
        '  - name: deny-metadata',
        '    action: Deny',
        '    to:',
        '    - networks: ["169.254.169.254/32"]',
        '---',
        'apiVersion: policy.networking.k8s.io/v1alpha2',
        'kind: ClusterNetworkPolicy',
        'metadata:',
        '  name: default-deny',
        'spec:',
        '  tier: Baseline',
        '  priority: 100',
        '  subject:',
        '    namespaces: {}',
        '  ingress:',
        '  - action: Deny',
        '    from:',
        '    - namespaces: {}',
        '',
      ].join('\n'));
      const imds = await run('explain', '--from', 'default/busybox1', '--to', '169.254.169.254', '--port', '80', seed, cnp);
      assert.equal(imds.code, 0);
      assert.deepEqual(imds.stdout.split('\n').slice(0, 4), [
        'default/busybox1 (192.168.48.252) -> 169.254.169.254 TCP/80: DENIED',
        '  egress  DENIED   denied by admin ClusterNetworkPolicy block-imds (priority 10) egress rule 0 deny-metadata',
        '          tier     decided in the Admin tier; ClusterNetworkPolicies selecting default/busybox1 for egress: block-imds',
        '  ingress allowed  169.254.169.254 is not a pod, so no policy applies',
      ]);
      assert.match(imds.stdout, /assuming the packet goes to the pod's address itself: a pod reaching itself through a Service is subject to ClusterNetworkPolicy/);
      const hairpin = await run('explain', '--from', 'default/busybox1', '--to', 'default/busybox1', '--port', '80', '--via-service', seed, cnp);
      assert.equal(hairpin.code, 0);
      assert.match(hairpin.stdout, /^default\/busybox1 \(192\.168\.48\.252\) -> default\/busybox1 \(192\.168\.48\.252\) TCP\/80: DENIED\n/);
      assert.match((await run('explain', '--from', 'default/busybox1', '--to', 'default/busybox1', '--port', '80', seed, cnp)).stdout, /: ALLOWED\n/);
      const notSame = await run('explain', '--from', 'default/busybox1', '--to', 'default/busybox2', '--port', '80', '--via-service', seed, cnp);
      assert.equal(notSame.code, 2);
      assert.match(notSame.stderr, /--via-service: --from and --to must be the same pod/);
      const { stdout } = await run('explain', '--from', 'default/busybox2', '--to', 'default/busybox1', '--port', '80', '--output', 'json', seed, cnp);
      const result = JSON.parse(stdout) as { allowed: boolean; ingress: { tier: string; decidedBy: { tier: string; policy: string; rule: number; action: string } } };
      assert.equal(result.allowed, false);
      assert.equal(result.ingress.tier, 'Baseline');
      assert.deepEqual({ ...result.ingress.decidedBy }, { tier: 'Baseline', policy: 'default-deny', priority: 100, rule: 0, name: '', action: 'Deny', failClosed: null, tie: null });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('treats an address that is no pod as outside policy', async () => {
    const { stdout } = await run('explain', '--from', '203.0.113.9', '--to', 'default/busybox1', '--port', '443', seed, example('deny-all'));
    assert.match(stdout, /egress  allowed  203\.0\.113\.9 is not a pod, so no policy applies/);
    assert.match(stdout, /ingress DENIED   default\/busybox1 is isolated for ingress by default\/deny-all/);
  });

  const usage: readonly [string, string[], RegExp][] = [
    ['an unknown pod', ['--from', 'default/nope', '--to', 'default/busybox1', '--port', '80', seed], /--from default\/nope: no such pod/],
    ['a port out of range', ['--from', 'default/busybox2', '--to', 'default/busybox1', '--port', '0', seed], /--port "0": must be a number from 1 to 65535/],
    ['a port with ICMP', ['--from', 'default/busybox2', '--to', 'default/busybox1', '--port', '80', '--protocol', 'ICMP', seed], /--port makes no sense with ICMP/],
    ['an unknown protocol', ['--from', 'default/busybox2', '--to', 'default/busybox1', '--port', '80', '--protocol', 'GRE', seed], /--protocol "GRE"/],
    ['a malformed address', ['--from', '10.0.0', '--to', 'default/busybox1', '--port', '80', seed], /expected NAMESPACE\/POD or an IPv4 address/],
  ];
  for (const [name, args, message] of usage) {
    it(`exits 2 for ${name}`, async () => {
      const { code, stderr } = await run('explain', ...args);
      assert.equal(code, 2);
      assert.match(stderr, message);
    });
  }
});

describe('the palisade executable', () => {
  it('runs as a process and exits non-zero on an unknown command', async () => {
    const cli = path.join(root, 'dist/daemon/main.js');
    const { stdout } = await promisify(execFile)(process.execPath, [cli, 'compile', '--node-name', 'node-a', seed, example('deny-all')]);
    assert.match(stdout, /-I FORWARD 1 -m comment --comment "pal:\S+ palisade network policy" -j pal-FORWARD/);
    await assert.rejects(promisify(execFile)(process.execPath, [cli, 'frobnicate']), (error: { code?: number; stderr?: string }) => error.code === 2 && /unknown command "frobnicate"/.test(error.stderr ?? ''));
  });
});
