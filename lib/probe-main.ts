/**
 * Entry point of the probe program that runs inside network namespaces (see probe/command-line.ts for its usage).
 * Exits explicitly: a server that watched its stdin would otherwise keep the process alive.
 */
import { probeMain } from './probe/command-line.js';

process.exit(await probeMain(process.argv.slice(2)));
