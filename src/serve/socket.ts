// The transmission phase's socket. The handshake runs on the socket net.Server accepted
// ('data' events: each chunk is a new Buffer pushed through the Readable stream). For the
// transmission phase the connection moves to a second net.Socket over a duplicate of the same
// fd that reads with `onread`: libuv reads straight into one buffer the server owns, and the
// callback gets the byte count, with no stream buffering, no Buffer and no event per chunk.
// On the 2-core nested VM, QD1 random writes measured 1.06x and 1.08x, at two pinned
// placements (`node bench/nbd-ab.mjs`, docs/SERVE-PERF.md "Requests read into one buffer"). pause() on
// such a socket stops reading at once (readStop), where a streaming socket goes on reading into
// its buffer; so a paused one never sees the client's EOF either, and a connection that has
// ended resumes it (Transmission.maybeEnd) for its fd to be closed.
//
// Why the move is safe: it happens inside the 'data' callback that ended the handshake, so the
// first socket has read nothing after the chunk being handled (whose rest, the "leftover", the
// caller feeds first), and it is destroyed before this callback returns: closing its fd leaves
// the connection open through the duplicate (one open file description; close(2) sends no
// FIN). Bytes the client sends next wait in the kernel for the new socket. The handshake's
// replies must have reached the kernel before the first socket is destroyed (a destroyed
// socket drops what it still had queued): when they have not, or the fd is not available, the
// connection stays on the first socket, which works the same, only slower.
import { Socket } from 'node:net';
import { loadAddon } from '../addon.js';

/** One read buffer for every connection: a callback consumes its bytes before the next read. */
const READ_BYTES = 64 * 1024;
let shared: Buffer | null = null;

/**
 * A socket over a duplicate of `s0`'s fd that passes each read's bytes to `onBytes(buf, n)`
 * (buf is reused by the next read: copy what must outlive the call). `s0` is destroyed, its
 * listeners removed first. Returns null, and leaves `s0` untouched, when the move cannot be
 * made safely (see above).
 */
export function moveToReadBuffer(s0: Socket, onBytes: (buf: Buffer, n: number) => void): Socket | null {
  const fd = (s0 as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0 || s0.writableLength > 0 || s0.destroyed) return null;
  let dup: number;
  try { dup = loadAddon().dupFd(fd); } catch { return null; }
  const buffer = shared ??= Buffer.allocUnsafeSlow(READ_BYTES);
  let s1: Socket;
  try {
    s1 = new Socket({
      fd: dup, allowHalfOpen: true, readable: true, writable: true,
      onread: { buffer, callback: (n: number, buf: Uint8Array) => { onBytes(buf as Buffer, n); return true; } },
    } as ConstructorParameters<typeof Socket>[0]);
  } catch {
    try { loadAddon().closeFd(dup); } catch { /* gone */ }
    return null;
  }
  s0.removeAllListeners();
  s0.on('error', () => { /* nothing can be pending on it: see above */ });
  s0.destroy();
  return s1;
}
