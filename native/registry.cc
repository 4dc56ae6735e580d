/*
 * The process-wide table registry.  See registry.h.
 *
 * Locking: join(), leave(), release_owned(), view() and stats() take g_mu:
 * they run when a file is opened or closed, or a context is torn down, never
 * per request.  ring() takes no lock: it runs on a table release that found
 * waiters, from any thread, and must not wait for a thread that is opening a
 * file.  It reads an entry's eventfd copies with the entry's `ringers` count
 * raised; leave() clears the copy first and closes it only once `ringers` is
 * back to zero, so a ring() never writes a number that was closed (and maybe
 * reused for a file) under it.  Entries are never freed, only recycled with a
 * new generation, so a stale id still points at valid memory.
 */
#include "registry.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <utility>

#include "backend.h"

namespace rf {
namespace registry {

namespace {

/* The table memory: one reference for the open entry, one per ArrayBuffer over it. */
struct Block {
    int32_t *mem = nullptr;
    size_t map_bytes = 0;
    size_t bytes = 0;
    std::atomic<uint32_t> refs{1};
};

struct Entry {
    /* Under g_mu. */
    bool used = false;
    uint64_t dev = 0, ino = 0;
    uint32_t capacity = 0;
    bool direct = false;
    uint32_t bits = 0;
    uint32_t workaround_users = 0;
    Block *block = nullptr;
    /* Read by ring() without the lock. */
    std::atomic<uint32_t> gen{0};
    std::atomic<uint32_t> ringers{0};
    std::atomic<int> fds[MAX_PARTICIPANTS]; /* eventfd copy + 1; 0: none */
};

std::mutex g_mu;
Entry g_entries[MAX_TABLES];
/* Open entries by identity (g_mu held): join() and stats() look up here instead of scanning. */
/* (Never destroyed: a thread may still tear down a context while the process exits.) */
auto &g_index = *new std::map<std::pair<uint64_t, uint64_t>, uint32_t>();
/* A free entry is looked for from here on (g_mu held). */
uint32_t g_next_free = 0;

constexpr uint32_t ID_INDEX_BITS = 12;
static_assert((1u << ID_INDEX_BITS) == MAX_TABLES, "table id index width");
constexpr uint32_t ID_GEN_MASK = (1u << 19) - 1; /* id stays a non-negative int32 */

uint32_t make_id(uint32_t gen, uint32_t index) { return ((gen & ID_GEN_MASK) << ID_INDEX_BITS) | index; }

/* The open entry an id names, or null (g_mu held). */
Entry *lookup(uint32_t id) {
    uint32_t index = id & (MAX_TABLES - 1);
    Entry &e = g_entries[index];
    if (!e.used || (e.gen.load() & ID_GEN_MASK) != (id >> ID_INDEX_BITS))
        return nullptr;
    return &e;
}

void unref(Block *b) {
    if (b->refs.fetch_sub(1) == 1) {
        munmap(b->mem, b->map_bytes);
        delete b;
    }
}

int32_t load(int32_t *m, uint32_t i) { return __atomic_load_n(m + i, __ATOMIC_SEQ_CST); }
void store(int32_t *m, uint32_t i, int32_t v) { __atomic_store_n(m + i, v, __ATOMIC_SEQ_CST); }

std::string key_text(uint64_t dev, uint64_t ino) {
    return "device " + std::to_string(dev) + ", inode " + std::to_string(ino);
}

}  // namespace

Joined join(uint64_t dev, uint64_t ino, uint32_t capacity, bool direct, bool workaround, int wake_fd) {
    if (capacity < 1 || capacity > MAX_CAPACITY)
        throw Error("ERR_RINGFENCE_INVALID_ARG", "table capacity must be 1.." + std::to_string(MAX_CAPACITY));
    std::lock_guard<std::mutex> lock(g_mu);
    Entry *e = nullptr;
    uint32_t index = 0;
    auto found = g_index.find({dev, ino});
    if (found != g_index.end()) {
        index = found->second;
        e = &g_entries[index];
    }
    if (e != nullptr && e->direct != direct)
        throw Error("ERR_RINGFENCE_MIXED_IO_MODES",
                    std::string("the file is already open ") + (e->direct ? "with O_DIRECT" : "buffered") +
                        " by another engine in this process (same device and inode), and mixing the two on one "
                        "file can lose bytes: open it { direct: " + (e->direct ? "true" : "false") +
                        " } like the other handles, or close those first");
    if (e != nullptr && (e->bits & ((1u << MAX_PARTICIPANTS) - 1)) == ((1u << MAX_PARTICIPANTS) - 1))
        throw Error("ERR_RINGFENCE_TABLE_PARTICIPANTS",
                    "the file is already open by " + std::to_string(MAX_PARTICIPANTS) +
                        " I/O contexts in this process (inline engines and offload workers), the most one "
                        "tracked-request table can coordinate: close some of those engines, give them fewer "
                        "workers, or open this file from fewer threads");
    bool created = false;
    if (e == nullptr) {
        for (uint32_t n = 0; n < MAX_TABLES; n++) {
            uint32_t i = (g_next_free + n) % MAX_TABLES;
            if (!g_entries[i].used) {
                e = &g_entries[i];
                index = i;
                /* Round-robin: an index is reused as late as possible (its ids recur later). */
                g_next_free = (i + 1) % MAX_TABLES;
                break;
            }
        }
        if (e == nullptr)
            throw Error("ERR_RINGFENCE_TABLE_REGISTRY_FULL",
                        std::to_string(MAX_TABLES) +
                            " tracked files are open in this process, the registry's limit: close some files, "
                            "or open this one with trackRequests: false if nothing else writes it");
        auto *b = new Block();
        b->bytes = size_t(HEADER_WORDS + capacity * SLOT_WORDS) * 4;
        long page = sysconf(_SC_PAGESIZE);
        b->map_bytes = (b->bytes + size_t(page) - 1) / size_t(page) * size_t(page);
        void *p = mmap(nullptr, b->map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            int err = errno;
            delete b;
            throw Error("ENOMEM", "cannot map a tracked-request table: " + errno_name(err));
        }
        b->mem = static_cast<int32_t *>(p); /* zero: every slot FREE, generation 0 */
        store(b->mem, H_CAPACITY, int32_t(capacity));
        e->block = b;
        e->dev = dev;
        e->ino = ino;
        e->capacity = capacity;
        e->direct = direct;
        e->bits = 0;
        e->workaround_users = 0;
        e->gen.store(e->gen.load() + 1);
        e->used = true;
        g_index[{dev, ino}] = index;
        created = true;
    }
    uint32_t bit = 0;
    while (e->bits & (1u << bit))
        bit++;
    int copy = fcntl(wake_fd, F_DUPFD_CLOEXEC, 3);
    if (copy < 0) {
        int err = errno;
        if (created) {
            e->used = false;
            e->gen.store(e->gen.load() + 1);
            g_index.erase({dev, ino});
            unref(e->block);
            e->block = nullptr;
        }
        throw Error(err == EMFILE ? "EMFILE" : "EBADF",
                    "cannot register a wake-up for the tracked-request table of " + key_text(dev, ino) + ": " +
                        errno_name(err) + (err == EMFILE ? " (raise the open-files limit, ulimit -n)" : ""));
    }
    e->fds[bit].store(copy + 1);
    e->bits |= 1u << bit;
    store(e->block->mem, H_PARTICIPANTS, int32_t(e->bits));
    if (workaround)
        store(e->block->mem, H_WORKAROUND, int32_t(++e->workaround_users));
    Joined j;
    j.id = make_id(e->gen.load(), index);
    j.bit = bit;
    j.capacity = e->capacity;
    j.workaround = workaround;
    return j;
}

void set_workaround(Joined &j, bool wanted) {
    std::lock_guard<std::mutex> lock(g_mu);
    Entry *e = lookup(j.id);
    if (e == nullptr || (e->bits & (1u << j.bit)) == 0 || j.workaround == wanted)
        return;
    j.workaround = wanted;
    if (wanted)
        e->workaround_users++;
    else if (e->workaround_users > 0)
        e->workaround_users--;
    store(e->block->mem, H_WORKAROUND, int32_t(e->workaround_users));
}

void leave(const Joined &j) {
    std::lock_guard<std::mutex> lock(g_mu);
    Entry *e = lookup(j.id);
    if (e == nullptr || (e->bits & (1u << j.bit)) == 0)
        return;
    int copy = e->fds[j.bit].exchange(0);
    /* A ring() that read the copy before the exchange is counted in ringers: wait for it. */
    while (e->ringers.load() != 0)
        sched_yield();
    if (copy > 0)
        close(copy - 1);
    e->bits &= ~(1u << j.bit);
    store(e->block->mem, H_PARTICIPANTS, int32_t(e->bits));
    if (j.workaround && e->workaround_users > 0)
        store(e->block->mem, H_WORKAROUND, int32_t(--e->workaround_users));
    if (e->bits == 0) {
        /* The identity closes: the next join starts a fresh table (this one is freed once unviewed). */
        e->used = false;
        g_index.erase({e->dev, e->ino});
        e->gen.store(e->gen.load() + 1);
        unref(e->block);
        e->block = nullptr;
    }
}

uint32_t release_owned(const Joined &j) {
    std::lock_guard<std::mutex> lock(g_mu);
    Entry *e = lookup(j.id);
    if (e == nullptr)
        return 0;
    int32_t *m = e->block->mem;
    uint32_t wake = 0;
    /* src/table.ts releaseOwned(), the same steps: the owner is gone, nobody else writes its slots. */
    for (uint32_t i = 0; i < e->capacity; i++) {
        uint32_t base = HEADER_WORDS + i * SLOT_WORDS;
        uint32_t s = uint32_t(load(m, base + S_STATE));
        uint32_t st = s & ST_MASK;
        if (st == ST_FREE || ((s >> OWNER_SHIFT) & OWNER_MASK) != j.bit)
            continue;
        uint32_t gen = (s >> GEN_SHIFT) & GEN_MASK;
        store(m, base + S_STATE, int32_t(((gen + 1) & GEN_MASK) << GEN_SHIFT));
        if (st != ST_CLAIMED && (s & SER_BIT))
            __atomic_fetch_sub(m + H_SER_IN_FLIGHT, 1, __ATOMIC_SEQ_CST);
        wake |= uint32_t(__atomic_exchange_n(m + base + S_WAITERS, 0, __ATOMIC_SEQ_CST));
    }
    /* Its statistics line: none of its entries is left. */
    store(m, H_PART + j.bit * H_PART_WORDS + P_IN_FLIGHT, 0);
    if (load(m, H_FULL_WAITERS) != 0)
        wake |= uint32_t(__atomic_exchange_n(m + H_FULL_WAITERS, 0, __ATOMIC_SEQ_CST));
    /*
     * Every other participant, not only the waiters found: a context terminated in the middle
     * of release() may have freed a slot (so it is skipped above) and not yet taken or rung
     * its waiter mask. Spurious wake-ups are harmless, and this runs only at teardown.
     */
    wake |= e->bits;
    wake &= ~(1u << j.bit) & ((1u << MAX_PARTICIPANTS) - 1);
    /* Mark them rung (as Executor.wake does) before the caller writes their eventfds. */
    for (uint32_t b = 0; b < MAX_PARTICIPANTS; b++)
        if (wake & (1u << b))
            store(m, H_RANG + b, 1);
    return wake;
}

void ring(uint32_t id, uint32_t mask) {
    Entry &e = g_entries[id & (MAX_TABLES - 1)];
    e.ringers.fetch_add(1);
    if ((e.gen.load() & ID_GEN_MASK) == (id >> ID_INDEX_BITS)) {
        mask &= (1u << MAX_PARTICIPANTS) - 1;
        for (uint32_t b = 0; mask != 0; b++, mask >>= 1) {
            if ((mask & 1) == 0)
                continue;
            int copy = e.fds[b].load();
            if (copy > 0) {
                uint64_t one = 1;
                /* EAGAIN (counter saturated) still leaves it readable: the wake is not lost. */
                ssize_t n = write(copy - 1, &one, sizeof one);
                (void)n;
            }
        }
    }
    e.ringers.fetch_sub(1);
}

Napi::ArrayBuffer view(Napi::Env env, uint32_t id) {
    Block *b;
    {
        std::lock_guard<std::mutex> lock(g_mu);
        Entry *e = lookup(id);
        if (e == nullptr)
            throw Napi::Error::New(env, "tableView: table " + std::to_string(id) + " is not open");
        b = e->block;
        b->refs.fetch_add(1);
    }
    return Napi::ArrayBuffer::New(env, b->mem, b->bytes, [](Napi::Env, void *, Block *blk) { unref(blk); }, b);
}

Napi::Value stats(Napi::Env env, uint64_t dev, uint64_t ino) {
    std::lock_guard<std::mutex> lock(g_mu);
    auto found = g_index.find({dev, ino});
    if (found != g_index.end()) {
        Entry &e = g_entries[found->second];
        int32_t *m = e.block->mem;
        Napi::Object o = Napi::Object::New(env);
        o.Set("id", make_id(e.gen.load(), uint32_t(&e - g_entries)));
        o.Set("capacity", e.capacity);
        o.Set("participants", uint32_t(__builtin_popcount(e.bits)));
        o.Set("workaroundUsers", e.workaround_users);
        /* The participants' own counts (src/table.ts inFlight() and highWater()): each exact,
         * their sum read one after the other, so approximate while busy and capped. */
        uint32_t in_flight = 0, high_water = 0;
        for (uint32_t p = 0; p < MAX_PARTICIPANTS; p++) {
            in_flight += uint32_t(load(m, H_PART + p * H_PART_WORDS + P_IN_FLIGHT));
            high_water += uint32_t(load(m, H_PART + p * H_PART_WORDS + P_HIGH_WATER));
        }
        o.Set("inFlight", in_flight < e.capacity ? in_flight : e.capacity);
        o.Set("highWater", high_water < e.capacity ? high_water : e.capacity);
        o.Set("serialisingInFlight", load(m, H_SER_IN_FLIGHT));
        return o;
    }
    return env.Null();
}

}  // namespace registry
}  // namespace rf
