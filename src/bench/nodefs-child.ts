// Child process of the bench's 'node:fs-uring' engine (src/bench/engines.ts): runs the node:fs
// engine on the job given as argv[2] (JSON) and prints the result as JSON. Started with
// UV_USE_IO_URING=1, which libuv reads once at start, so it has to be its own process.
import { nodeFs, type Job } from './engines.js';

const job = JSON.parse(process.argv[2]) as Job;
const r = await nodeFs().run(job);
process.stdout.write(JSON.stringify(r));
