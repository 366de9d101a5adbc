import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

/**
 * The compiled output runs with production dependencies only, as it does in the image: copied to a
 * fresh folder with `npm ci --omit=dev`, then `palisade --help` and `palisade compile` on an example.
 */

const root = path.resolve(fileURLToPath(import.meta.url), '../../../..');
const run = promisify(execFile);

describe('the package with production dependencies only', function () {
  this.timeout(240_000);
  let dir = '';

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'palisade-package-'));
    for (const entry of ['package.json', 'package-lock.json', 'dist/rules', 'dist/lib', 'dist/daemon', 'manifests/examples', 'test/fixtures/seed']) {
      await cp(path.join(root, entry), path.join(dir, entry), { recursive: true });
    }
    await run('npm', ['ci', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund'], { cwd: dir });
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('installs no development dependency', async () => {
    const { stdout } = await run('npm', ['ls', '--omit=dev', '--depth=0', '--json'], { cwd: dir });
    const deps = Object.keys((JSON.parse(stdout) as { dependencies?: Record<string, unknown> }).dependencies ?? {}).sort();
    assert.deepEqual(deps, ['pino', 'prom-client', 'yaml']);
  });

  it('prints its help', async () => {
    const { stdout } = await run(process.execPath, ['dist/daemon/main.js', '--help'], { cwd: dir });
    assert.match(stdout, /Commands:\n\s+daemon/);
  });

  it('compiles an example', async () => {
    const { stdout } = await run(process.execPath, ['dist/daemon/main.js', 'compile', '--node-name', 'node-a', 'test/fixtures/seed/cluster.yaml', 'manifests/examples/allow-out-to-in.yaml'], { cwd: dir });
    assert.match(stdout, /^\*mangle$/m);
    assert.match(stdout, /default\/allow-out-to-in ingress rule 0/);
  });

  it('loads the daemon command (and so every runtime dependency) far enough to reject a bad flag', async () => {
    await assert.rejects(run(process.execPath, ['dist/daemon/main.js', 'daemon', '--log-level', 'loud', '--node-name', 'n'], { cwd: dir }), (error: { code?: number; stderr?: string }) => error.code === 2 && /--log-level "loud"/.test(error.stderr ?? ''));
  });
});
