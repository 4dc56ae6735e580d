// A runnable tour of the API: node examples/basic.mjs [directory]
// The directory must support O_DIRECT (XFS, ext4, btrfs; not tmpfs). Default: /var/tmp.
import { join } from 'node:path';
import { rmSync } from 'node:fs';
import { Engine, RingfenceError } from 'ringfence';

const dir = process.argv[2] ?? '/var/tmp';
const path = join(dir, `ringfence-example-${process.pid}.dat`);
const engine = await Engine.start({ workers: 2, backend: 'auto', queueDepth: 64 });
try {
  const file = await engine.open(path, { create: true, truncate: true, direct: true });
  const buf = engine.alloc(4096);
  buf.fill(7);
  console.log('write ->', await file.write(buf, 0));
  console.log('write at 8 GiB (sparse) ->', await file.write(buf, 8n << 30n));
  console.log('writeZeroes ->', await file.writeZeroes(4096, 65536));
  const back = Buffer.alloc(4096); // an ordinary buffer: bounced through the pool
  console.log('batch ->', await file.submit([
    { op: 'write', buffer: buf, offset: 8192 },
    { op: 'read', buffer: back, offset: 0 },
    { op: 'flush' },
  ]));
  console.log('read back equals:', back.every((b) => b === 7));
  console.log('size ->', await file.size());
  try {
    await file.writev([Buffer.alloc(100)], 3); // vectors cannot be padded: must be aligned for O_DIRECT
  } catch (err) {
    if (!(err instanceof RingfenceError)) throw err;
    console.log(`expected error: ${err.code}: ${err.message}`);
  }
  console.log('workaround decision:', file.info().xfsWorkaround);
  console.log('workers:', engine.info().workers.map((w) => `${w.index}: ${w.backend}`).join(', '));
  engine.free(buf);
  await file.close();
} finally {
  await engine.close();
  rmSync(path, { force: true });
}
