// Serve an image over NBD from inside a Node program, next to the program's own I/O on the
// same engine. Usage: node examples/nbd-server.mjs [image] [port]
//   then, from another shell:
//   qemu-io -f raw nbd://127.0.0.1:10809 -c 'write -P 0xab 0 4k' -c 'read -P 0xab 0 4k'
//   nbdinfo nbd://127.0.0.1:10809
// Ctrl-C drains in-flight requests and exits.
import { existsSync, openSync, ftruncateSync, closeSync } from 'node:fs';
import { Engine, serveNbd } from 'ringfence';

const image = process.argv[2] ?? '/var/tmp/ringfence-example.raw';
const port = Number(process.argv[3] ?? 10809);
if (!existsSync(image)) {
  const fd = openSync(image, 'w');
  ftruncateSync(fd, 64 << 20); // a sparse 64 MiB image
  closeSync(fd);
}

// One engine for the server and for this program's own work.
const engine = await Engine.start({ bufferPoolBytes: 128 << 20 });
const server = await serveNbd({
  engine, path: image, port, name: 'disk',
  onEvent: (e) => { if (e.event !== 'request-error') console.log(e.event, e.connection ?? '', e.reason ?? e.uri ?? e.remote ?? ''); },
});
console.log(`serving ${image} (${server.export.size} bytes) at ${server.uri}`);

// The program's own logic: every 5 s, look at the image's first block through the same
// engine and print the server's counters.
const mine = await engine.open(image, { readOnly: true });
const block = engine.alloc(4096);
const timer = setInterval(async () => {
  await mine.read(block, 0);
  const s = server.stats();
  console.log(`first byte 0x${block[0].toString(16).padStart(2, '0')}; ${s.connections} clients, ${s.reads} reads, ${s.writes} writes, ${s.errors} errors`);
}, 5000);

process.once('SIGINT', async () => {
  clearInterval(timer);
  const clean = await server.close(); // answers what is in flight, flushes and closes the export
  engine.free(block);
  await mine.close();
  await engine.close();
  console.log(clean ? 'stopped cleanly' : 'stopped (some connections were cut)');
  process.exit(clean ? 0 : 1);
});
