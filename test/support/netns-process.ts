// Kept for callers that still import it here; the lab owns the implementation.
export { LabProcess as NetnsProcess } from '../../lib/lab/process.js';
