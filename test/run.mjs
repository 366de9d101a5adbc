// Runs the compiled test layers with mocha and ends with one summary line, "N passed, N failed,
// N skipped", which CI reads. Usage: node test/run.mjs [unit|integration ...] (default: all layers).
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Mocha from 'mocha';

const root = path.resolve(fileURLToPath(import.meta.url), '../..');
const LAYERS = {
  unit: { dir: 'dist/test/unit', timeout: 120_000 },
  integration: { dir: 'dist/test/integration', timeout: 120_000 },
  e2e: { dir: 'dist/test/e2e', timeout: 300_000 },
};

if (!process.version.startsWith('v24.')) {
  console.error(`palisade is tested on Node.js 24, but this is ${process.version}: run through npm (npm test) so node_modules/.bin/node comes first`);
  process.exit(1);
}

async function testFiles(dir) {
  const entries = await readdir(path.join(root, dir), { recursive: true }).catch(() => []);
  return entries.filter((f) => f.endsWith('.test.js')).sort().map((f) => path.join(root, dir, f));
}

const requested = process.argv.slice(2);
const layers = requested.length === 0 ? Object.keys(LAYERS) : requested;
let passed = 0;
let failed = 0;
let skipped = 0;
for (const layer of layers) {
  const config = LAYERS[layer];
  if (config === undefined) {
    console.error(`unknown test layer "${layer}"; layers: ${Object.keys(LAYERS).join(', ')}`);
    process.exit(2);
  }
  const mocha = new Mocha({ timeout: config.timeout, reporter: 'spec' });
  for (const file of await testFiles(config.dir)) mocha.addFile(file);
  await mocha.loadFilesAsync();
  console.log(`\n=== ${layer} tests`);
  await new Promise((resolve) => {
    const runner = mocha.run(resolve);
    runner.on('pass', () => passed++);
    runner.on('fail', () => failed++);
    runner.on('pending', () => skipped++);
  });
}
console.log(`\n${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exitCode = failed > 0 ? 1 : 0;
