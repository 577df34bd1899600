// The CUDA emulator's execution engine (host builds only): launches, the two scheduling modes,
// __syncthreads, the warp collectives and the runtime API subset launchers use. The design is
// described at the top of ../cuda_emu.h.
#pragma once

#include <pthread.h>

#include <condition_variable>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "fiber.h"
#include "types.h"

// The emulator's state stays inside each library (hidden visibility): two emulated libraries in
// one process, built with different options, must not share it. Types that kernels and
// launchers put in their signatures are declared in types.h / fp16.h, with default visibility
// (a function taking a hidden type would be hidden itself).
#pragma GCC visibility push(hidden)

#ifndef JM_EMU_MAX_DYNAMIC_SMEM
// The largest dynamic shared memory a launch may ask for (sm_90's opt-in limit; sm_87 has 163 KB).
#define JM_EMU_MAX_DYNAMIC_SMEM (227 * 1024)
#endif

namespace jm {
namespace emu {
namespace detail {

// The launch's dynamic shared memory: one buffer, since blocks run one after another. Every
// `extern __shared__` array of every kernel starts at its first byte, as on the GPU.
alignas(256) inline unsigned char dynamic_smem_storage[JM_EMU_MAX_DYNAMIC_SMEM];

enum class Mode { kForward, kReverse, kRandom, kThreads };
enum class WaitKind : uint8_t { kNone, kBarrier, kWarp };
enum class WarpOp : uint8_t {
  kSync,
  kShflIdx,
  kShflUp,
  kShflDown,
  kShflXor,
  kBallot,
  kAny,
  kAll,
  kMatchAny,
  kMatchAll,
  kRedAdd,
  kRedMinU,
  kRedMaxU,
  kRedMinS,
  kRedMaxS,
  kRedAnd,
  kRedOr,
  kRedXor,
};

inline const char* op_name(WarpOp op) {
  static const char* const names[] = {
      "__syncwarp",       "__shfl_sync",       "__shfl_up_sync",    "__shfl_down_sync",  "__shfl_xor_sync",
      "__ballot_sync",    "__any_sync",        "__all_sync",        "__match_any_sync",  "__match_all_sync",
      "__reduce_add_sync", "__reduce_min_sync", "__reduce_max_sync", "__reduce_min_sync", "__reduce_max_sync",
      "__reduce_and_sync", "__reduce_or_sync",  "__reduce_xor_sync",
  };
  return names[static_cast<int>(op)];
}

struct Lane {
  WaitKind wait = WaitKind::kNone;
  bool exited = true;  // lanes past the end of the block never exist
  WarpOp op = WarpOp::kSync;
  uint8_t size = 0;
  unsigned mask = 0;
  int param = 0;
  int width = 32;
  uint64_t value = 0;
  uint64_t result = 0;
  int pred = 0;
};

struct Block;

// What threadIdx, blockIdx, blockDim and gridDim read: one per emulated thread.
struct ThreadCtx {
  uint3 thread_idx;
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
  int linear;
  Block* block;
};

inline thread_local ThreadCtx* t_cur = nullptr;

struct Abort {};  // unwinds an emulated thread (threads mode) once the launch has failed

struct Settings {
  std::mutex mu;
  int mode = -1;  // -1: JM_EMU_MODE or the default
  unsigned long long seed = 0x9e3779b97f4a7c15ull;
  std::string mode_name;
};
inline Settings& settings() {
  static Settings s;
  return s;
}

inline std::mutex& launch_mutex() {
  static std::mutex m;
  return m;
}

inline thread_local cudaError_t t_last_error = cudaSuccess;
inline thread_local char t_last_message[2048];

inline void set_last_error(cudaError_t code, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
inline void set_last_error(cudaError_t code, const char* fmt, ...) {
  t_last_error = code;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(t_last_message, sizeof t_last_message, fmt, ap);
  va_end(ap);
  const char* quiet = getenv("JM_EMU_QUIET");
  if (quiet == nullptr || quiet[0] == '\0' || quiet[0] == '0') fprintf(stderr, "jm_emu: %s\n", t_last_message);
}

inline bool parse_mode(const char* s, Mode* out) {
  if (s == nullptr) return false;
  const std::string m(s);
  if (m == "forward" || m == "fibers") *out = Mode::kForward;
  else if (m == "reverse") *out = Mode::kReverse;
  else if (m == "random") *out = Mode::kRandom;
  else if (m == "threads") *out = Mode::kThreads;
  else return false;
  return true;
}

inline const char* mode_name(Mode m) {
  switch (m) {
    case Mode::kForward: return "forward";
    case Mode::kReverse: return "reverse";
    case Mode::kRandom: return "random";
    case Mode::kThreads: return "threads";
  }
  return "?";
}

inline Mode default_mode() {
#if defined(JM_EMU_TSAN) || defined(__SANITIZE_ADDRESS__)
  return Mode::kThreads;  // sanitizer builds exist to watch real threads
#else
  return Mode::kForward;
#endif
}

inline size_t stack_bytes(bool threads) {
  const char* s = getenv("JM_EMU_STACK_KB");
  long kb = s != nullptr ? strtol(s, nullptr, 10) : 0;
  if (kb <= 0) {
#if defined(JM_EMU_TSAN) || defined(__SANITIZE_ADDRESS__)
    kb = 1024;
#else
    kb = threads ? 512 : 256;
#endif
  }
  return static_cast<size_t>(kb) * 1024;
}

inline int poison_byte() {
  const char* s = getenv("JM_EMU_POISON");
  return s != nullptr && s[0] != '\0' ? static_cast<int>(strtol(s, nullptr, 0)) & 0xff : 0xff;
}

// The fibers, kept for later blocks and launches (launches are serialised by launch_mutex()).
inline std::vector<std::unique_ptr<Fiber>>& fiber_pool() {
  static std::vector<std::unique_ptr<Fiber>> pool;
  return pool;
}

inline void fiber_main(void* arg);
inline void* thread_main(void* arg);

struct Block {
  // ---- the launch -------------------------------------------------------------------------------
  dim3 grid, dim;
  size_t smem = 0;
  const char* name = "";
  Mode mode = Mode::kForward;
  bool threaded = false;
  void (*body)(void*) = nullptr;
  void* arg = nullptr;
  int n = 0;
  int nwarps = 0;
  unsigned long long nblocks = 0, next_block = 0;
  uint3 bidx{0, 0, 0};
  int poison = 0xff;
  std::vector<Lane> lanes;
  std::vector<ThreadCtx> ctx;

  // ---- the running block ------------------------------------------------------------------------
  int live = 0;
  int blocked = 0;
  int bar_arrived = 0, bar_count = 0, bar_result_count = 0, bar_result_arrived = 0;
  bool failed = false;
  std::string error;

  // ---- threads mode -----------------------------------------------------------------------------
  std::mutex mu;
  std::condition_variable bar_cv, launch_cv;
  std::unique_ptr<std::condition_variable[]> warp_cv;
  int launch_participants = 0, launch_arrived = 0;
  unsigned launch_gen = 0;
  bool done = false;

  // ---- fiber modes ------------------------------------------------------------------------------
  Fiber sched;
  Fiber** fibers = nullptr;
  uint64_t rng = 0;

  std::unique_lock<std::mutex> lock() {
    std::unique_lock<std::mutex> lk(mu, std::defer_lock);
    if (threaded) lk.lock();
    return lk;
  }

  // ---- failure ----------------------------------------------------------------------------------
  void fail(const std::string& msg) {  // lock held
    if (!failed) {
      failed = true;
      char where[96];
      snprintf(where, sizeof where, "block (%u,%u,%u): ", bidx.x, bidx.y, bidx.z);
      error = where + msg;
    }
    if (threaded) {
      bar_cv.notify_all();
      for (int w = 0; w < nwarps; ++w) warp_cv[w].notify_all();
    }
  }

  // Leave the kernel for good: the launch has failed. The lock (if any) is released.
  [[noreturn]] void abandon(std::unique_lock<std::mutex>& lk, int t) {
    if (threaded) {
      if (lk.owns_lock()) lk.unlock();
      throw Abort{};
    }
    fiber_switch(*fibers[t], sched);  // the scheduler never resumes a failed block
    abort();
  }

  void wait(std::unique_lock<std::mutex>& lk, int t, std::condition_variable* cv) {
    if (threaded) {
      cv->wait(lk, [&] { return lanes[t].wait == WaitKind::kNone || failed; });
      if (lanes[t].wait != WaitKind::kNone) abandon(lk, t);
    } else {
      // Even when this thread completed the barrier itself, it yields, so that every phase between
      // two synchronisation points runs its threads in the scheduler's order.
      fiber_switch(*fibers[t], sched);
    }
  }

  std::string describe() const {
    int at_barrier = 0, exited = 0;
    std::string warps;
    for (int t = 0; t < n; ++t) {
      if (lanes[t].exited) ++exited;
      else if (lanes[t].wait == WaitKind::kBarrier) ++at_barrier;
    }
    for (int w = 0; w < nwarps && warps.size() < 400; ++w) {
      for (int l = 0; l < 32; ++l) {
        const Lane& x = lanes[w * 32 + l];
        if (x.wait != WaitKind::kWarp) continue;
        char buf[128];
        snprintf(buf, sizeof buf, "; warp %d lane %d waits in %s(mask 0x%08x)", w, l, op_name(x.op), x.mask);
        warps += buf;
        break;
      }
    }
    char head[160];
    snprintf(head, sizeof head, "%d of %d threads at __syncthreads, %d exited", at_barrier, n, exited);
    return head + warps;
  }

  void check_deadlock() {  // lock held; after an arrival that completed nothing
    if (live > 0 && blocked == live) fail("deadlock: every live thread waits and none can go on (" + describe() + ")");
  }

  // ---- __syncthreads ----------------------------------------------------------------------------
  void release_barrier() {
    bar_result_count = bar_count;
    bar_result_arrived = bar_arrived;
    bar_count = 0;
    bar_arrived = 0;
    for (int t = 0; t < n; ++t) {
      if (lanes[t].wait == WaitKind::kBarrier) {
        lanes[t].wait = WaitKind::kNone;
        --blocked;
      }
    }
    if (threaded) bar_cv.notify_all();
  }

  // Returns the number of threads whose predicate was non-zero, and how many threads took part.
  std::pair<int, int> syncthreads(int t, int pred) {
    auto lk = lock();
    if (failed) abandon(lk, t);
    lanes[t].wait = WaitKind::kBarrier;
    ++blocked;
    ++bar_arrived;
    bar_count += pred != 0;
    if (bar_arrived == live) release_barrier();
    else check_deadlock();
    if (failed) abandon(lk, t);
    wait(lk, t, &bar_cv);
    return {bar_result_count, bar_result_arrived};
  }

  // ---- warp collectives -------------------------------------------------------------------------
  enum class Group { kIncomplete, kComplete, kMismatch };

  // Is the group lane t waits in complete? Exited lanes named in the mask do not take part (CUDA:
  // "all non-exited threads named in mask must execute the same intrinsic").
  Group group_state(int t, unsigned* members, std::string* why) {
    const int base = t & ~31;
    const Lane& me = lanes[t];
    unsigned got = 0;
    bool complete = true;
    for (int l = 0; l < 32; ++l) {
      if (!((me.mask >> l) & 1)) continue;
      const Lane& o = lanes[base + l];
      if (o.exited) continue;
      if (o.wait != WaitKind::kWarp) {
        complete = false;
        continue;
      }
      if (((o.mask >> (t & 31)) & 1) && (o.op != me.op || o.mask != me.mask || o.size != me.size)) {
        char buf[256];
        snprintf(buf, sizeof buf,
                 "warp %d: lane %d is in %s(mask 0x%08x, %d-byte value) while lane %d is in %s(mask 0x%08x, "
                 "%d-byte value); every lane named in a mask must make the same call with the same mask",
                 t / 32, t & 31, op_name(me.op), me.mask, me.size, l, op_name(o.op), o.mask, o.size);
        *why = buf;
        return Group::kMismatch;
      }
      if (o.mask != me.mask) {  // o waits in another group that does not name lane t
        complete = false;
        continue;
      }
      got |= 1u << l;
    }
    *members = got;
    return complete ? Group::kComplete : Group::kIncomplete;
  }

  uint64_t poison_value(int size) const {
    uint64_t v = 0;
    std::memset(&v, poison, static_cast<size_t>(size));
    return v;
  }

  void complete_group(int base, unsigned group) {
    Lane* L = &lanes[base];
    const int first = __builtin_ctz(group);
    const WarpOp op = L[first].op;
    switch (op) {
      case WarpOp::kSync:
        break;
      case WarpOp::kShflIdx:
      case WarpOp::kShflUp:
      case WarpOp::kShflDown:
      case WarpOp::kShflXor:
        for (int i = 0; i < 32; ++i) {
          if (!((group >> i) & 1)) continue;
          // PTX shfl.sync: c = ((32 - width) << 8) | clamp, clamp = 0 for .up and 31 otherwise
          const int segmask = (32 - L[i].width) & 31;
          const int b = L[i].param & 31;
          const int cval = op == WarpOp::kShflUp ? 0 : 31;
          const int max_lane = (i & segmask) | (cval & ~segmask);
          const int min_lane = i & segmask;
          int j;
          bool in_range;
          if (op == WarpOp::kShflUp) {
            j = i - b;
            in_range = j >= max_lane;
          } else if (op == WarpOp::kShflDown) {
            j = i + b;
            in_range = j <= max_lane;
          } else if (op == WarpOp::kShflXor) {
            j = i ^ b;
            in_range = j <= max_lane;
          } else {
            j = min_lane | (b & ~segmask);
            in_range = j <= max_lane;
          }
          if (!in_range) j = i;
          // reading a lane outside the group is undefined in CUDA: return a poison value
          L[i].result = ((group >> j) & 1) ? L[j].value : poison_value(L[i].size);
        }
        break;
      case WarpOp::kBallot:
      case WarpOp::kAny:
      case WarpOp::kAll: {
        unsigned bits = 0;
        for (int i = 0; i < 32; ++i)
          if (((group >> i) & 1) && L[i].value != 0) bits |= 1u << i;
        const uint64_t r = op == WarpOp::kBallot ? bits : op == WarpOp::kAny ? (bits != 0) : (bits == group);
        for (int i = 0; i < 32; ++i)
          if ((group >> i) & 1) L[i].result = r;
        break;
      }
      case WarpOp::kMatchAny:
        for (int i = 0; i < 32; ++i) {
          if (!((group >> i) & 1)) continue;
          unsigned same = 0;
          for (int j = 0; j < 32; ++j)
            if (((group >> j) & 1) && L[j].value == L[i].value) same |= 1u << j;
          L[i].result = same;
        }
        break;
      case WarpOp::kMatchAll: {
        bool all = true;
        for (int i = 0; i < 32; ++i)
          if (((group >> i) & 1) && L[i].value != L[first].value) all = false;
        for (int i = 0; i < 32; ++i) {
          if (!((group >> i) & 1)) continue;
          L[i].result = all ? L[i].mask : 0;
          L[i].pred = all;
        }
        break;
      }
      default: {
        uint32_t acc = static_cast<uint32_t>(L[first].value);
        for (int i = first + 1; i < 32; ++i) {
          if (!((group >> i) & 1)) continue;
          const uint32_t v = static_cast<uint32_t>(L[i].value);
          switch (op) {
            case WarpOp::kRedAdd: acc += v; break;
            case WarpOp::kRedMinU: acc = v < acc ? v : acc; break;
            case WarpOp::kRedMaxU: acc = v > acc ? v : acc; break;
            case WarpOp::kRedMinS: acc = static_cast<int32_t>(v) < static_cast<int32_t>(acc) ? v : acc; break;
            case WarpOp::kRedMaxS: acc = static_cast<int32_t>(v) > static_cast<int32_t>(acc) ? v : acc; break;
            case WarpOp::kRedAnd: acc &= v; break;
            case WarpOp::kRedOr: acc |= v; break;
            case WarpOp::kRedXor: acc ^= v; break;
            default: break;
          }
        }
        for (int i = 0; i < 32; ++i)
          if ((group >> i) & 1) L[i].result = acc;
        break;
      }
    }
    for (int i = 0; i < 32; ++i) {
      if ((group >> i) & 1) {
        L[i].wait = WaitKind::kNone;
        --blocked;
      }
    }
    if (threaded) warp_cv[base / 32].notify_all();
  }

  // Complete lane t's group if it can be; false on a mismatch (the launch has failed then).
  bool try_complete(int t) {
    unsigned members = 0;
    std::string why;
    switch (group_state(t, &members, &why)) {
      case Group::kComplete:
        complete_group(t & ~31, members);
        return true;
      case Group::kMismatch:
        fail(why);
        return false;
      case Group::kIncomplete:
        return true;
    }
    return true;
  }

  uint64_t warp_op(int t, WarpOp op, unsigned mask, uint64_t value, int size, int param, int width, int* pred) {
    auto lk = lock();
    if (failed) abandon(lk, t);
    const int lane = t & 31;
    char buf[200];
    if (!((mask >> lane) & 1)) {
      snprintf(buf, sizeof buf, "warp %d lane %d called %s with mask 0x%08x, which does not name the calling lane",
               t / 32, lane, op_name(op), mask);
      fail(buf);
      abandon(lk, t);
    }
    if (width < 1 || width > 32 || (width & (width - 1)) != 0) {
      snprintf(buf, sizeof buf, "warp %d lane %d called %s with width %d (a power of two from 1 to 32 is needed)",
               t / 32, lane, op_name(op), width);
      fail(buf);
      abandon(lk, t);
    }
    Lane& me = lanes[t];
    me.op = op;
    me.mask = mask;
    me.value = value;
    me.size = static_cast<uint8_t>(size);
    me.param = param;
    me.width = width;
    me.wait = WaitKind::kWarp;
    ++blocked;
    if (try_complete(t) && me.wait == WaitKind::kWarp) check_deadlock();
    if (failed) abandon(lk, t);
    wait(lk, t, threaded ? &warp_cv[t / 32] : nullptr);
    if (pred != nullptr) *pred = me.pred;
    return me.result;
  }

  unsigned active_mask(int t) {
    auto lk = lock();
    const int base = t & ~31;
    unsigned m = 0;
    for (int l = 0; l < 32; ++l)
      if (!lanes[base + l].exited) m |= 1u << l;
    return m;
  }

  // ---- thread and block lifetime ----------------------------------------------------------------
  void thread_exit(int t) {
    auto lk = lock();
    if (failed) return;
    lanes[t].exited = true;
    --live;
    const int base = t & ~31;
    for (int l = 0; l < 32 && !failed; ++l) {  // groups that waited only for this lane
      if (lanes[base + l].wait == WaitKind::kWarp) try_complete(base + l);
    }
    if (!failed && bar_arrived > 0 && bar_arrived == live) release_barrier();
    if (!failed) check_deadlock();
  }

  void kernel_failed(int t, const char* what) {
    auto lk = lock();
    char buf[300];
    snprintf(buf, sizeof buf, "thread (%u,%u,%u): %s", ctx[t].thread_idx.x, ctx[t].thread_idx.y,
             ctx[t].thread_idx.z, what);
    fail(buf);
  }

  [[noreturn]] void trap(int t) {
    auto lk = lock();
    char buf[160];
    snprintf(buf, sizeof buf, "thread (%u,%u,%u) called __trap()", ctx[t].thread_idx.x, ctx[t].thread_idx.y,
             ctx[t].thread_idx.z);
    fail(buf);
    abandon(lk, t);
  }

  void begin_block(unsigned long long b) {  // lock held (threads mode) or between blocks (fibers)
    bidx.x = static_cast<unsigned>(b % grid.x);
    bidx.y = static_cast<unsigned>((b / grid.x) % grid.y);
    bidx.z = static_cast<unsigned>(b / (static_cast<unsigned long long>(grid.x) * grid.y));
    for (int t = 0; t < n; ++t) {
      ctx[t].block_idx = bidx;
      lanes[t].wait = WaitKind::kNone;
      lanes[t].exited = false;
    }
    live = n;
    blocked = 0;
    bar_arrived = bar_count = 0;
    if (smem > 0) std::memset(dynamic_smem_storage, poison, smem);
  }

  // ---- fiber modes ------------------------------------------------------------------------------
  uint64_t next_random() {  // xorshift64*
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545f4914f6cdd1dull;
  }

  void run_fibers() {
    auto& pool = fiber_pool();
    const size_t stack = stack_bytes(false);
    while (pool.size() < static_cast<size_t>(n)) {
      pool.emplace_back(new Fiber());
    }
    std::vector<Fiber*> fs(static_cast<size_t>(n));
    for (int t = 0; t < n; ++t) {
      if (!pool[t]->allocate(stack)) {
        failed = true;
        error = "cannot allocate the stacks of " + std::to_string(n) + " fibers";
        return;
      }
      fs[t] = pool[t].get();
    }
    fibers = fs.data();
    std::vector<int> order(static_cast<size_t>(n));
    for (next_block = 0; next_block < nblocks && !failed; ++next_block) {
      begin_block(next_block);
      for (int t = 0; t < n; ++t) {
        order[t] = mode == Mode::kReverse ? n - 1 - t : t;
        fibers[t]->start(&fiber_main, &ctx[t]);
      }
      while (live > 0 && !failed) {
        if (mode == Mode::kRandom) {
          for (int i = n - 1; i > 0; --i) std::swap(order[i], order[next_random() % (i + 1)]);
        }
        bool ran = false;
        for (int i = 0; i < n && !failed; ++i) {
          const int t = order[i];
          if (lanes[t].exited || lanes[t].wait != WaitKind::kNone) continue;
          t_cur = &ctx[t];
          fiber_switch(sched, *fibers[t]);
          ran = true;
        }
        t_cur = nullptr;
        if (!ran && !failed) fail("deadlock: no thread can run (" + describe() + ")");
      }
    }
    fibers = nullptr;
  }

  // ---- threads mode -----------------------------------------------------------------------------
  bool next_block_barrier() {  // every thread between two blocks; false when the launch is over
    std::unique_lock<std::mutex> lk(mu);
    const unsigned gen = launch_gen;
    if (++launch_arrived == launch_participants) {
      launch_arrived = 0;
      if (!failed && next_block < nblocks) begin_block(next_block++);
      else done = true;
      ++launch_gen;
      launch_cv.notify_all();
    } else {
      launch_cv.wait(lk, [&] { return launch_gen != gen; });
    }
    return !done;
  }

  void run_threads() {
    warp_cv.reset(new std::condition_variable[static_cast<size_t>(nwarps)]);
    std::vector<pthread_t> ids(static_cast<size_t>(n));
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, stack_bytes(true));
    int created = 0;
    {
      std::unique_lock<std::mutex> lk(mu);  // nobody passes the first barrier before all exist
      launch_participants = n;
      for (; created < n; ++created) {
        if (pthread_create(&ids[created], &attr, &thread_main, &ctx[created]) != 0) break;
      }
      if (created < n) {
        failed = true;
        error = "cannot start " + std::to_string(n) + " threads (started " + std::to_string(created) +
                "); use a fiber mode or a smaller block";
        launch_participants = created;
      }
    }
    pthread_attr_destroy(&attr);
    for (int t = 0; t < created; ++t) pthread_join(ids[t], nullptr);
  }
};

inline void fiber_main(void* arg) {
  ThreadCtx* c = static_cast<ThreadCtx*>(arg);
  Block& b = *c->block;
  const int t = c->linear;
  try {
    b.body(b.arg);
  } catch (const std::exception& e) {
    b.kernel_failed(t, (std::string("the kernel threw: ") + e.what()).c_str());
  } catch (...) {
    b.kernel_failed(t, "the kernel threw an exception");
  }
  b.thread_exit(t);
  fiber_switch(*b.fibers[t], b.sched);  // never resumed
  abort();
}

inline void* thread_main(void* arg) {
  ThreadCtx* c = static_cast<ThreadCtx*>(arg);
  Block& b = *c->block;
  const int t = c->linear;
  t_cur = c;
  while (b.next_block_barrier()) {
    try {
      b.body(b.arg);
      b.thread_exit(t);
    } catch (const Abort&) {
    } catch (const std::exception& e) {
      b.kernel_failed(t, (std::string("the kernel threw: ") + e.what()).c_str());
    } catch (...) {
      b.kernel_failed(t, "the kernel threw an exception");
    }
  }
  t_cur = nullptr;
  return nullptr;
}

inline bool resolve_mode(Mode* mode) {
  Settings& s = settings();
  std::lock_guard<std::mutex> g(s.mu);
  if (s.mode >= 0) {
    *mode = static_cast<Mode>(s.mode);
    return true;
  }
  const char* env = getenv("JM_EMU_MODE");
  if (env == nullptr || env[0] == '\0') {
    *mode = default_mode();
    return true;
  }
  return parse_mode(env, mode);
}

struct LaunchConfig {
  dim3 grid;
  dim3 block;
  size_t smem;
  cudaStream_t stream;
  const char* name;
};

// Run body(arg) once per thread of every block of the launch; sets the last error.
inline void launch(const LaunchConfig& cfg, void (*body)(void*), void* arg) {
  const char* name = cfg.name;
  if (t_cur != nullptr) {
    set_last_error(cudaErrorNotSupported, "%s: launch from inside a kernel (dynamic parallelism) is not emulated",
                   name);
    return;
  }
  const dim3 g = cfg.grid, d = cfg.block;
  const unsigned long long threads = static_cast<unsigned long long>(d.x) * d.y * d.z;
  if (d.x == 0 || d.y == 0 || d.z == 0 || d.x > 1024 || d.y > 1024 || d.z > 64 || threads > 1024) {
    set_last_error(cudaErrorInvalidConfiguration,
                   "%s: invalid block (%u,%u,%u): each dimension >= 1, x,y <= 1024, z <= 64, at most 1024 threads",
                   name, d.x, d.y, d.z);
    return;
  }
  if (g.x == 0 || g.y == 0 || g.z == 0 || g.x > 2147483647u || g.y > 65535 || g.z > 65535) {
    set_last_error(cudaErrorInvalidConfiguration, "%s: invalid grid (%u,%u,%u)", name, g.x, g.y, g.z);
    return;
  }
  if (cfg.smem > JM_EMU_MAX_DYNAMIC_SMEM) {
    set_last_error(cudaErrorInvalidConfiguration, "%s: %zu bytes of dynamic shared memory (the emulator has %d)",
                   name, cfg.smem, JM_EMU_MAX_DYNAMIC_SMEM);
    return;
  }
  Mode mode;
  if (!resolve_mode(&mode)) {
    set_last_error(cudaErrorInvalidValue, "%s: JM_EMU_MODE=%s is not one of forward, reverse, random, threads", name,
                   getenv("JM_EMU_MODE"));
    return;
  }
  std::lock_guard<std::mutex> serial(launch_mutex());
  Block b;
  b.grid = g;
  b.dim = d;
  b.smem = cfg.smem;
  b.name = name;
  b.mode = mode;
  b.threaded = mode == Mode::kThreads;
  b.body = body;
  b.arg = arg;
  b.n = static_cast<int>(threads);
  b.nwarps = (b.n + 31) / 32;
  b.nblocks = static_cast<unsigned long long>(g.x) * g.y * g.z;
  b.poison = poison_byte();
  b.lanes.resize(static_cast<size_t>(b.nwarps) * 32);
  b.ctx.resize(static_cast<size_t>(b.n));
  for (int t = 0; t < b.n; ++t) {
    ThreadCtx& c = b.ctx[t];
    c.thread_idx = uint3{t % d.x, (t / d.x) % d.y, t / (d.x * d.y)};
    c.block_dim = d;
    c.grid_dim = g;
    c.linear = t;
    c.block = &b;
  }
  {
    Settings& s = settings();
    std::lock_guard<std::mutex> gs(s.mu);
    b.rng = s.seed | 1;
  }
  if (b.threaded) b.run_threads();
  else b.run_fibers();
  if (b.failed) {
    set_last_error(cudaErrorLaunchFailure, "%s (%s mode): %s", name, mode_name(mode), b.error.c_str());
  }
}

template <class... P>
struct BoundLaunch {
  LaunchConfig cfg;
  void (*fn)(P...);

  template <class... A>
  void operator()(A&&... args) const {
    static_assert(sizeof...(A) == sizeof...(P), "JM_LAUNCH: wrong number of kernel arguments");
    // Parameters are copied once, converted as a real launch converts them, and each thread gets its
    // own copy (a kernel may modify its by-value parameters).
    using Params = std::tuple<std::decay_t<P>...>;
    Params params(std::forward<A>(args)...);
    struct Call {
      void (*fn)(P...);
      const Params* params;
    } call{fn, &params};
    launch(
        cfg,
        [](void* p) {
          const Call* c = static_cast<const Call*>(p);
          Params mine(*c->params);
          std::apply(c->fn, mine);
        },
        &call);
  }
};

struct LaunchBuilder {
  LaunchConfig cfg;
  template <class... P>
  BoundLaunch<P...> operator()(void (*fn)(P...)) const {
    return BoundLaunch<P...>{cfg, fn};
  }
};

// The calling emulated thread.
inline ThreadCtx& self() { return *t_cur; }

}  // namespace detail
}  // namespace emu
}  // namespace jm

// ---- the C API of every emulated library (for Python's ctypes and C tests) -----------------------
extern "C" {

// Scheduling mode for later launches: "forward", "reverse", "random", "threads", or NULL / "" for
// the JM_EMU_MODE environment variable (default "forward"). Returns 0, or -1 for an unknown name.
__attribute__((used, visibility("default"))) inline int jm_emu_set_mode(const char* mode) {
  auto& s = ::jm::emu::detail::settings();
  std::lock_guard<std::mutex> g(s.mu);
  if (mode == nullptr || mode[0] == '\0') {
    s.mode = -1;
    return 0;
  }
  ::jm::emu::detail::Mode m;
  if (!::jm::emu::detail::parse_mode(mode, &m)) return -1;
  s.mode = static_cast<int>(m);
  return 0;
}

// The mode the next launch will use ("invalid" if JM_EMU_MODE names none).
__attribute__((used, visibility("default"))) inline const char* jm_emu_get_mode(void) {
  ::jm::emu::detail::Mode m;
  if (!::jm::emu::detail::resolve_mode(&m)) return "invalid";
  return ::jm::emu::detail::mode_name(m);
}

// Seed of the "random" mode's thread order (the same seed gives the same order).
__attribute__((used, visibility("default"))) inline void jm_emu_set_seed(unsigned long long seed) {
  auto& s = ::jm::emu::detail::settings();
  std::lock_guard<std::mutex> g(s.mu);
  s.seed = seed;
}

// The message of the last failed launch of the calling host thread ("" if none).
__attribute__((used, visibility("default"))) inline const char* jm_emu_last_error(void) { return ::jm::emu::detail::t_last_message; }

// 1 for a ThreadSanitizer build (its default mode is "threads").
__attribute__((used, visibility("default"))) inline int jm_emu_tsan(void) {
#if defined(JM_EMU_TSAN)
  return 1;
#else
  return 0;
#endif
}
}

// ---- CUDA runtime API subset ---------------------------------------------------------------------
inline cudaError_t cudaGetLastError() {
  const cudaError_t e = ::jm::emu::detail::t_last_error;
  ::jm::emu::detail::t_last_error = cudaSuccess;
  return e;
}
inline cudaError_t cudaPeekAtLastError() { return ::jm::emu::detail::t_last_error; }

inline const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError: return "cudaErrorInitializationError";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorAssert: return "cudaErrorAssert";
    case cudaErrorIllegalInstruction: return "cudaErrorIllegalInstruction";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    default: return "cudaErrorUnknown";
  }
}
inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorNotSupported: return "operation not supported";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    default: return cudaGetErrorName(e);
  }
}

inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int) { return cudaSuccess; }

// An Orin-like device: 8 SMs (Orin Nano), compute capability 8.7.
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int) {
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = 48 * 1024; break;
    case cudaDevAttrWarpSize: *value = 32; break;
    case cudaDevAttrMultiProcessorCount: *value = 8; break;
    case cudaDevAttrComputeCapabilityMajor: *value = 8; break;
    case cudaDevAttrComputeCapabilityMinor: *value = 7; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = JM_EMU_MAX_DYNAMIC_SMEM; break;
    default: return cudaErrorInvalidValue;
  }
  return cudaSuccess;
}

template <class T>
inline cudaError_t cudaFuncSetAttribute(T*, cudaFuncAttribute, int) {
  return cudaSuccess;
}

// Device memory is host memory.
inline cudaError_t cudaMalloc(void** p, size_t bytes) {
  *p = bytes == 0 ? nullptr : std::malloc(bytes);
  return (*p != nullptr || bytes == 0) ? cudaSuccess : cudaErrorMemoryAllocation;
}
template <class T>
inline cudaError_t cudaMalloc(T** p, size_t bytes) {
  return cudaMalloc(reinterpret_cast<void**>(p), bytes);
}
inline cudaError_t cudaFree(void* p) {
  std::free(p);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
  if (bytes != 0) std::memmove(dst, src, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                                   cudaStream_t = nullptr) {
  return cudaMemcpy(dst, src, bytes, kind);
}
inline cudaError_t cudaMemset(void* dst, int value, size_t bytes) {
  if (bytes != 0) std::memset(dst, value, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t = nullptr) {
  return cudaMemset(dst, value, bytes);
}
template <class T>
inline cudaError_t cudaMemcpyToSymbol(T& symbol, const void* src, size_t bytes, size_t offset = 0,
                                      cudaMemcpyKind = cudaMemcpyHostToDevice) {
  std::memcpy(reinterpret_cast<char*>(&symbol) + offset, src, bytes);
  return cudaSuccess;
}
template <class T>
inline cudaError_t cudaMemcpyToSymbolAsync(T& symbol, const void* src, size_t bytes, size_t offset = 0,
                                           cudaMemcpyKind kind = cudaMemcpyHostToDevice, cudaStream_t = nullptr) {
  return cudaMemcpyToSymbol(symbol, src, bytes, offset, kind);
}

// ---- built-in variables --------------------------------------------------------------------------
#define threadIdx (static_cast<const ::uint3&>(::jm::emu::detail::t_cur->thread_idx))
#define blockIdx (static_cast<const ::uint3&>(::jm::emu::detail::t_cur->block_idx))
#define blockDim (static_cast<const ::dim3&>(::jm::emu::detail::t_cur->block_dim))
#define gridDim (static_cast<const ::dim3&>(::jm::emu::detail::t_cur->grid_dim))

// ---- block and warp synchronisation --------------------------------------------------------------
inline void __syncthreads() {
  auto& c = ::jm::emu::detail::self();
  c.block->syncthreads(c.linear, 0);
}
// Ends the launch with cudaErrorLaunchFailure (on a GPU: an illegal-instruction trap).
inline void __trap() {
  auto& c = ::jm::emu::detail::self();
  c.block->trap(c.linear);
}
inline int __syncthreads_count(int pred) {
  auto& c = ::jm::emu::detail::self();
  return c.block->syncthreads(c.linear, pred).first;
}
inline int __syncthreads_and(int pred) {
  auto& c = ::jm::emu::detail::self();
  const auto r = c.block->syncthreads(c.linear, pred);
  return r.first == r.second;
}
inline int __syncthreads_or(int pred) {
  auto& c = ::jm::emu::detail::self();
  return c.block->syncthreads(c.linear, pred).first != 0;
}

namespace jm {
namespace emu {
namespace detail {
inline uint64_t warp_call(WarpOp op, unsigned mask, uint64_t value, int size, int param = 0, int width = 32,
                          int* pred = nullptr) {
  ThreadCtx& c = self();
  return c.block->warp_op(c.linear, op, mask, value, size, param, width, pred);
}
template <class T>
inline uint64_t to_bits(const T& v) {
  static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8,
                "warp operations take a trivially copyable value of at most 8 bytes");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <class T>
inline T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}
template <class T>
inline T shfl(WarpOp op, unsigned mask, T var, int param, int width) {
  return from_bits<T>(warp_call(op, mask, to_bits(var), static_cast<int>(sizeof(T)), param, width));
}
}  // namespace detail
}  // namespace emu
}  // namespace jm

inline void __syncwarp(unsigned mask = 0xffffffffu) {
  ::jm::emu::detail::warp_call(::jm::emu::detail::WarpOp::kSync, mask, 0, 0);
}
template <class T>
inline T __shfl_sync(unsigned mask, T var, int srcLane, int width = warpSize) {
  return ::jm::emu::detail::shfl(::jm::emu::detail::WarpOp::kShflIdx, mask, var, srcLane, width);
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned int delta, int width = warpSize) {
  return ::jm::emu::detail::shfl(::jm::emu::detail::WarpOp::kShflUp, mask, var, static_cast<int>(delta), width);
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned int delta, int width = warpSize) {
  return ::jm::emu::detail::shfl(::jm::emu::detail::WarpOp::kShflDown, mask, var, static_cast<int>(delta), width);
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = warpSize) {
  return ::jm::emu::detail::shfl(::jm::emu::detail::WarpOp::kShflXor, mask, var, laneMask, width);
}
inline unsigned __ballot_sync(unsigned mask, int predicate) {
  return static_cast<unsigned>(
      ::jm::emu::detail::warp_call(::jm::emu::detail::WarpOp::kBallot, mask, predicate != 0, 4));
}
inline int __any_sync(unsigned mask, int predicate) {
  return static_cast<int>(::jm::emu::detail::warp_call(::jm::emu::detail::WarpOp::kAny, mask, predicate != 0, 4));
}
inline int __all_sync(unsigned mask, int predicate) {
  return static_cast<int>(::jm::emu::detail::warp_call(::jm::emu::detail::WarpOp::kAll, mask, predicate != 0, 4));
}
inline int __uni_sync(unsigned mask, int predicate) {
  const unsigned b = __ballot_sync(mask, predicate);
  return b == 0 || b == (mask & ::jm::emu::detail::self().block->active_mask(::jm::emu::detail::self().linear));
}
template <class T>
inline unsigned __match_any_sync(unsigned mask, T value) {
  return static_cast<unsigned>(::jm::emu::detail::warp_call(::jm::emu::detail::WarpOp::kMatchAny, mask,
                                                            ::jm::emu::detail::to_bits(value), sizeof(T)));
}
template <class T>
inline unsigned __match_all_sync(unsigned mask, T value, int* pred) {
  return static_cast<unsigned>(::jm::emu::detail::warp_call(
      ::jm::emu::detail::WarpOp::kMatchAll, mask, ::jm::emu::detail::to_bits(value), sizeof(T), 0, 32, pred));
}
inline unsigned __activemask() {
  auto& c = ::jm::emu::detail::self();
  return c.block->active_mask(c.linear);
}

#define JM_EMU_REDUCE(NAME, OP, T)                                                                          \
  inline T NAME(unsigned mask, T value) {                                                                   \
    return static_cast<T>(static_cast<uint32_t>(                                                            \
        ::jm::emu::detail::warp_call(::jm::emu::detail::WarpOp::OP, mask, static_cast<uint32_t>(value), 4))); \
  }
JM_EMU_REDUCE(__reduce_add_sync, kRedAdd, unsigned)
JM_EMU_REDUCE(__reduce_add_sync, kRedAdd, int)
JM_EMU_REDUCE(__reduce_min_sync, kRedMinU, unsigned)
JM_EMU_REDUCE(__reduce_min_sync, kRedMinS, int)
JM_EMU_REDUCE(__reduce_max_sync, kRedMaxU, unsigned)
JM_EMU_REDUCE(__reduce_max_sync, kRedMaxS, int)
JM_EMU_REDUCE(__reduce_and_sync, kRedAnd, unsigned)
JM_EMU_REDUCE(__reduce_or_sync, kRedOr, unsigned)
JM_EMU_REDUCE(__reduce_xor_sync, kRedXor, unsigned)
#undef JM_EMU_REDUCE

// Dynamic shared memory, as `extern __shared__ T name[];` becomes in an emulated build (the build
// helper, plugins/emulation.py, rewrites it; see cuda_emu.h): a pointer to the launch's buffer.
#define JM_EMU_DYNAMIC_SHARED(T, name)   \
  typedef T jm_emu_dynamic_t_##name;     \
  jm_emu_dynamic_t_##name* const name =  \
      reinterpret_cast<jm_emu_dynamic_t_##name*>(::jm::emu::detail::dynamic_smem_storage)

#pragma GCC visibility pop
