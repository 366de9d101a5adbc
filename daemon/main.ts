#!/usr/bin/env node
import { ensureDaemonRuntime } from './runtime.js';

// The daemon sets up its V8 settings first, before anything else is loaded: it may re-execute itself.
if (process.argv[2] === 'daemon' && !process.argv.includes('--help') && !process.argv.includes('-h')) ensureDaemonRuntime();

const { runCli } = await import('./cli.js');
const { processIO } = await import('./command-io.js');

// The process entry point: the one place that sets the exit status.
process.exitCode = await runCli(process.argv.slice(2), processIO);
