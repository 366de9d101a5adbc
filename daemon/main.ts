#!/usr/bin/env node
import { runCli } from './cli.js';
import { processIO } from './command-io.js';

// The process entry point: the one place that sets the exit status.
process.exitCode = await runCli(process.argv.slice(2), processIO);
