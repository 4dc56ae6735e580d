// The shared buffer pool: one SharedArrayBuffer, carved by a buddy allocator into
// power-of-two blocks of 4 KiB pages. Every block is therefore 4 KiB-aligned in the
// pool, and the pool itself is page-aligned (growable SharedArrayBuffers are allocated
// page-aligned by V8), so any block is usable for O_DIRECT on every common device
// without a copy. Only the main thread allocates; workers only see byte offsets, and the
// page-generation map (see poolRangeLive() in src/shm.ts), which tells them whether the
// memory a ring entry names still belongs to the allocation the entry was made for.

export const PAGE = 4096;
const NONE = -1;

export class BufferPool {
  readonly sab: SharedArrayBuffer;
  readonly bytes: Uint8Array;
  readonly size: number;
  private readonly pages: number;
  private readonly maxOrder: number;
  /** Free lists per order, intrusive doubly-linked through next/prev (indexed by page). */
  private readonly heads: Int32Array;
  private readonly next: Int32Array;
  private readonly prev: Int32Array;
  /** For a page that starts a free block: its order; else -1. */
  private readonly freeOrder: Int8Array;
  /** For a page that starts an allocated block: its order; else -1. */
  private readonly usedOrder: Int8Array;
  private usedBytes = 0;
  private highWater = 0;
  /**
   * The page-generation map, shared with the workers: one int32 per page, 0 while the page is
   * free, else the generation of the allocation holding it (the same, never-0 value on every
   * page of a block; each alloc() draws a new one). Written only here, on the main thread.
   */
  readonly pageGenSab: SharedArrayBuffer;
  private readonly pageGen: Int32Array;
  private lastGen = 0;

  constructor(size: number) {
    if (!Number.isInteger(size) || size < PAGE || size % PAGE !== 0) {
      throw new RangeError(`bufferPoolBytes must be a positive multiple of ${PAGE}; got ${size}`);
    }
    // Growable: V8 reserves it page-aligned. maxByteLength === size: it never grows,
    // so registered buffers (io_uring fixed buffers) stay valid for its lifetime.
    this.sab = new SharedArrayBuffer(size, { maxByteLength: size });
    this.bytes = new Uint8Array(this.sab);
    this.size = size;
    this.pages = size / PAGE;
    this.maxOrder = Math.floor(Math.log2(this.pages));
    this.heads = new Int32Array(this.maxOrder + 1).fill(NONE);
    this.next = new Int32Array(this.pages).fill(NONE);
    this.prev = new Int32Array(this.pages).fill(NONE);
    this.freeOrder = new Int8Array(this.pages).fill(-1);
    this.usedOrder = new Int8Array(this.pages).fill(-1);
    this.pageGenSab = new SharedArrayBuffer(this.pages * 4);
    this.pageGen = new Int32Array(this.pageGenSab);
    // Seed the free lists with maximal naturally-aligned blocks.
    let page = 0;
    while (page < this.pages) {
      let order = this.maxOrder;
      while (order > 0 && ((page & ((1 << order) - 1)) !== 0 || page + (1 << order) > this.pages)) order--;
      this.push(order, page);
      page += 1 << order;
    }
  }

  /** Largest single allocation the pool can ever satisfy. */
  get maxAlloc(): number { return PAGE << this.maxOrder; }
  get used(): number { return this.usedBytes; }
  get peak(): number { return this.highWater; }

  /** Returns the byte offset of a block of at least `size` bytes, or -1 when none is free now. */
  alloc(size: number): number {
    const want = orderFor(size);
    if (want > this.maxOrder) return -1;
    let order = want;
    while (order <= this.maxOrder && this.heads[order] === NONE) order++;
    if (order > this.maxOrder) return -1;
    const page = this.heads[order];
    this.unlink(order, page);
    // Split down to the wanted order, returning the upper halves to the free lists.
    while (order > want) {
      order--;
      this.push(order, page + (1 << order));
    }
    this.usedOrder[page] = want;
    // A fresh generation (1..2^31-1, wrapping) on every page of the block: an entry made for
    // an earlier allocation of these pages no longer matches.
    this.lastGen = this.lastGen === 0x7fffffff ? 1 : this.lastGen + 1;
    this.pageGen.fill(this.lastGen, page, page + (1 << want));
    this.usedBytes += PAGE << want;
    if (this.usedBytes > this.highWater) this.highWater = this.usedBytes;
    return page * PAGE;
  }

  /** Frees a block returned by alloc(). Throws on a double free or a foreign offset. */
  free(offset: number): void {
    let page = offset / PAGE;
    if (!Number.isInteger(page) || page < 0 || page >= this.pages || this.usedOrder[page] < 0) {
      throw new Error(`BufferPool.free: ${offset} is not an allocated block (double free?)`);
    }
    let order = this.usedOrder[page];
    this.usedOrder[page] = -1;
    this.pageGen.fill(0, page, page + (1 << order));
    this.usedBytes -= PAGE << order;
    // Merge with free buddies of the same order.
    while (order < this.maxOrder) {
      const buddy = page ^ (1 << order);
      if (buddy >= this.pages || this.freeOrder[buddy] !== order) break;
      this.unlink(order, buddy);
      page = Math.min(page, buddy);
      order++;
    }
    this.push(order, page);
  }

  /** The order-sized capacity of the block at `offset`, or -1 if not allocated. */
  blockSize(offset: number): number {
    const page = offset / PAGE;
    if (!Number.isInteger(page) || page < 0 || page >= this.pages) return -1;
    const order = this.usedOrder[page];
    return order < 0 ? -1 : PAGE << order;
  }

  /**
   * The allocation generation of the block holding byte `offset` of the pool (what a ring
   * entry naming that memory carries in SQ_GEN); 0 if the page is free or `offset` is not in
   * the pool.
   */
  genAt(offset: number): number {
    if (!(offset >= 0 && offset < this.size)) return 0;
    return this.pageGen[Math.floor(offset / PAGE)];
  }

  private push(order: number, page: number): void {
    const head = this.heads[order];
    this.next[page] = head;
    this.prev[page] = NONE;
    if (head !== NONE) this.prev[head] = page;
    this.heads[order] = page;
    this.freeOrder[page] = order;
  }

  private unlink(order: number, page: number): void {
    const n = this.next[page], p = this.prev[page];
    if (p !== NONE) this.next[p] = n; else this.heads[order] = n;
    if (n !== NONE) this.prev[n] = p;
    this.freeOrder[page] = -1;
  }
}

function orderFor(size: number): number {
  const pages = Math.max(1, Math.ceil(size / PAGE));
  return 32 - Math.clz32(pages - 1);
}
