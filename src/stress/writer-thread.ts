// `ringfence stress --threads N`: one writer thread (a worker_threads Worker with an Engine of
// its own). The stress thread plans every operation and keeps the model; a writer thread only
// runs the writes, zero-writes and truncates it is sent, on its own engine's handle of the
// same file, so that they meet the other threads' requests in the one process-wide
// tracked-request table (docs/ARCHITECTURE.md, "Threads sharing a file"). Write data arrives
// in this thread's slot of a SharedArrayBuffer (src/stress/threads.ts).
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { Engine } from '../engine.js';
import type { File } from '../file.js';
import type { EngineOptions } from '../options.js';

export interface WriterInit {
  index: number;
  engine: EngineOptions;
  staging: SharedArrayBuffer;
  slotBytes: number;
}

export type WriterRequest =
  | { type: 'open'; id: number; path: string; direct: boolean }
  | { type: 'write'; id: number; path: string; off: number; len: number; slot: number }
  | { type: 'zero'; id: number; path: string; off: number; len: number }
  | { type: 'truncate'; id: number; path: string; size: number }
  | { type: 'stats'; id: number; path: string }
  | { type: 'close'; id: number; path: string }
  | { type: 'stop'; id: number };

export type WriterReply =
  | { id: number; ok: true; value: unknown }
  | { id: number; ok: false; message: string; code?: string };

async function serve(init: WriterInit): Promise<void> {
  const engine = await Engine.start(init.engine);
  const files = new Map<string, File>();
  const port = parentPort!;
  const reply = (m: WriterReply): void => port.postMessage(m);
  const file = (path: string): File => {
    const f = files.get(path);
    if (f === undefined) throw new Error(`writer thread ${init.index}: ${path} is not open here`);
    return f;
  };
  port.on('message', (m: WriterRequest) => {
    const run = async (): Promise<unknown> => {
      switch (m.type) {
        case 'open': {
          const f = await engine.open(m.path, { direct: m.direct });
          files.set(m.path, f);
          return f.stats().tableParticipants;
        }
        case 'write':
          return file(m.path).write(new Uint8Array(init.staging, m.slot * init.slotBytes, m.len), m.off);
        case 'zero': return file(m.path).writeZeroes(m.off, m.len);
        case 'truncate': return file(m.path).truncate(m.size);
        case 'stats': return file(m.path).stats();
        case 'close': {
          const f = files.get(m.path);
          files.delete(m.path);
          if (f) await f.close();
          return null;
        }
        case 'stop':
          for (const f of files.values()) await f.close();
          files.clear();
          await engine.close();
          return null;
      }
    };
    run().then((value) => {
      reply({ id: m.id, ok: true, value });
      if (m.type === 'stop') port.close(); // the thread then exits
    }, (err: unknown) => {
      const e = err as Error & { code?: string };
      reply({ id: m.id, ok: false, message: e?.message ?? String(err), code: e?.code });
    });
  });
  port.postMessage({ id: 0, ok: true, value: engine.info().mode });
}

if (!isMainThread && (workerData as { ringfenceStressWriter?: WriterInit } | null)?.ringfenceStressWriter !== undefined) {
  serve((workerData as { ringfenceStressWriter: WriterInit }).ringfenceStressWriter).catch((err: unknown) => {
    const e = err as Error & { code?: string };
    parentPort!.postMessage({ id: 0, ok: false, message: e?.message ?? String(err), code: e?.code });
  });
}
