// What one request/reply round trip over a Unix socket costs a Node server, against a C one, on
// this machine: the floor under `ringfence serve` at QD1 (an NBD request is 28 bytes, a write
// reply 16). A C client sends 28 bytes and waits for 16, N times, against:
//   c:          a C server (poll, read, write)
//   node:       a Node net.Server ('data' event, socket.write), what src/serve used before
//   node-onread: a Node server reading through net.Socket's onread into one buffer, replying
//               with socket.write (what src/serve uses since 2026-12-03: src/serve/socket.ts)
//   node-lean:  the same reads, replying with a synchronous write(2) on the fd (the least
//               JavaScript Node allows)
// Servers and client are compiled with cc into a temporary directory. Rounds interleaved, the
// median per server.
//   node bench/socket-floor.mjs [--trips N] [--repeat R] [--json]
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values: o } = parseArgs({ options: { trips: { type: 'string', default: '20000' }, repeat: { type: 'string', default: '3' }, json: { type: 'boolean', default: false } } });
const trips = Number(o.trips), repeat = Number(o.repeat);
if (!(Number.isInteger(trips) && trips >= 100 && trips <= 10_000_000)) throw new Error(`--trips ${o.trips}: give a whole number from 100 to 10000000`);
if (!(Number.isInteger(repeat) && repeat >= 1 && repeat <= 100)) throw new Error(`--repeat ${o.repeat}: give a whole number from 1 to 100`);

const CLIENT = `#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <time.h>
int main(int argc, char **argv) {
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un a = { .sun_family = AF_UNIX };
  strncpy(a.sun_path, argv[1], sizeof a.sun_path - 1);
  if (connect(fd, (void *)&a, sizeof a)) { perror("connect"); return 1; }
  char req[28] = { 0 }, rep[16];
  int n = atoi(argv[2]);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 0; i < n; i++) {
    if (write(fd, req, 28) != 28) return 2;
    for (int got = 0; got < 16;) { int r = read(fd, rep + got, 16 - got); if (r <= 0) return 3; got += r; }
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  printf("%.3f\\n", ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / n / 1000.0);
  return 0;
}
`;
const SERVER = `#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <poll.h>
int main(int argc, char **argv) {
  int s = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un a = { .sun_family = AF_UNIX };
  strncpy(a.sun_path, argv[1], sizeof a.sun_path - 1);
  unlink(argv[1]);
  if (bind(s, (void *)&a, sizeof a) || listen(s, 4)) { perror("bind"); return 1; }
  for (;;) {
    int c = accept(s, 0, 0);
    char b[64];
    for (int got = 0;;) {
      struct pollfd p = { c, POLLIN, 0 };
      poll(&p, 1, -1);
      int r = read(c, b + got, 28 - got);
      if (r <= 0) break;
      got += r;
      if (got == 28) { got = 0; if (write(c, b, 16) != 16) break; }
    }
    close(c);
  }
}
`;
const NODE_SERVER = `import net from 'node:net';
import { unlinkSync, writeSync } from 'node:fs';
const [, , path, lean] = process.argv;
try { unlinkSync(path); } catch {}
const rep = Buffer.alloc(16);
if (lean === 'onread') {
  const buf = Buffer.alloc(65536);
  net.createServer({ pauseOnConnect: true }, (s0) => {
    const handle = s0._handle; s0._handle = null;
    let got = 0;
    const s = new net.Socket({ handle, readable: true, writable: true, onread: { buffer: buf, callback: (n) => { got += n; while (got >= 28) { got -= 28; s.write(rep); } return true; } } });
    s.resume();
  }).listen(path);
} else if (lean !== 'lean') {
  net.createServer((s) => { let got = 0; s.on('data', (d) => { got += d.length; while (got >= 28) { got -= 28; s.write(rep); } }); }).listen(path);
} else {
  const buf = Buffer.alloc(65536);
  net.createServer({ pauseOnConnect: true }, (s0) => {
    const handle = s0._handle; s0._handle = null;
    let got = 0; const fd = handle.fd;
    const s = new net.Socket({ handle, readable: true, writable: true, onread: { buffer: buf, callback: (n) => { got += n; while (got >= 28) { got -= 28; writeSync(fd, rep); } return true; } } });
    s.resume();
  }).listen(path);
}
`;

const dir = mkdtempSync(join(tmpdir(), 'rf-socket-floor-'));
const median = (a) => [...a].sort((x, y) => x - y)[a.length >> 1];
try {
  writeFileSync(join(dir, 'client.c'), CLIENT);
  writeFileSync(join(dir, 'server.c'), SERVER);
  writeFileSync(join(dir, 'server.mjs'), NODE_SERVER);
  for (const p of ['client', 'server']) {
    try { execFileSync('cc', ['-O2', '-o', join(dir, p), join(dir, `${p}.c`)], { stdio: 'pipe' }); } catch (err) { throw new Error(`cc failed (apt-get install gcc): ${err.stderr ?? err.message}`); }
  }
  const servers = {
    c: () => [join(dir, 'server'), []],
    node: () => [process.execPath, [join(dir, 'server.mjs')]],
    'node-onread': () => [process.execPath, [join(dir, 'server.mjs'), 'onread']],
    'node-lean': () => [process.execPath, [join(dir, 'server.mjs'), 'lean']],
  };
  const got = Object.fromEntries(Object.keys(servers).map((k) => [k, []]));
  for (let r = 1; r <= repeat; r++) {
    for (const [name, make] of Object.entries(servers)) {
      const sock = join(dir, `${name}.sock`);
      rmSync(sock, { force: true }); // the last round's server, killed, left it behind
      const [cmd, args] = make();
      const child = spawn(cmd, name === 'c' ? [sock] : [...args.slice(0, 1), sock, ...args.slice(1)], { stdio: 'ignore' });
      try {
        for (let i = 0; i < 100 && !existsSync(sock); i++) execFileSync('sleep', ['0.05']);
        const us = Number(execFileSync(join(dir, 'client'), [sock, String(trips)], { encoding: 'utf8' }));
        got[name].push(us);
        process.stderr.write(`round ${r}/${repeat} ${name}: ${us.toFixed(1)} us per round trip\n`);
      } finally { child.kill(); }
    }
  }
  const res = Object.fromEntries(Object.entries(got).map(([k, v]) => [k, median(v)]));
  if (o.json) console.log(JSON.stringify({ trips, repeat, usPerRoundTrip: res }, null, 2));
  else {
    console.log(`one 28-byte request, 16-byte reply over a Unix socket, C client, ${trips} round trips, median of ${repeat} interleaved rounds`);
    for (const [k, v] of Object.entries(res)) console.log(`${k.padEnd(11)} ${v.toFixed(1)} us per round trip${k === 'c' ? '' : `  (+${(v - res.c).toFixed(1)} us over C)`}`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
