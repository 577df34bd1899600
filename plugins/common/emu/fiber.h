// Cooperative fibers for the CUDA emulator's deterministic scheduling modes (host builds only).
//
// One fiber per CUDA thread of the block being run; a fiber runs until it reaches a barrier or a
// warp operation and then switches back to the scheduler. x86-64 uses a small assembly switch
// (callee-saved registers, MXCSR and the x87 control word: about 20 ns a switch); other
// architectures, or any build with JM_EMU_USE_UCONTEXT defined, use ucontext (swapcontext, which
// also saves the signal mask with a system call: about 0.5 us a switch). Stacks are mmap'ed with
// a guard page below them, so that a stack overflow faults instead of corrupting a neighbour; they
// are reused by later blocks and launches. Under ThreadSanitizer every switch is announced with
// __tsan_switch_to_fiber.
#pragma once

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>

#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define JM_EMU_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#include <sanitizer/tsan_interface.h>
#define JM_EMU_TSAN 1
#endif
#endif

#if !defined(JM_EMU_USE_UCONTEXT) && !defined(__x86_64__)
#define JM_EMU_USE_UCONTEXT 1
#endif

// Hidden visibility: each emulated library keeps its own fibers (see runtime.h).
#pragma GCC visibility push(hidden)

#if !defined(JM_EMU_USE_UCONTEXT)
// void jm_emu_switch_x86(void** save_sp, void* new_sp): save the callee-saved state on the current
// stack, store the stack pointer in *save_sp, load new_sp and restore the state saved there.
// Emitted in a COMDAT group so that every translation unit may include this header.
extern "C" void jm_emu_switch_x86(void** save_sp, void* new_sp);
extern "C" void jm_emu_fiber_entry_x86();
asm(R"(
    .pushsection .text.jm_emu_switch_x86,"axG",@progbits,jm_emu_switch_x86,comdat
    .weak jm_emu_switch_x86
    .hidden jm_emu_switch_x86
    .type jm_emu_switch_x86,@function
    .p2align 4
jm_emu_switch_x86:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size jm_emu_switch_x86, .-jm_emu_switch_x86
    .popsection
    .pushsection .text.jm_emu_fiber_entry_x86,"axG",@progbits,jm_emu_fiber_entry_x86,comdat
    .weak jm_emu_fiber_entry_x86
    .hidden jm_emu_fiber_entry_x86
    .type jm_emu_fiber_entry_x86,@function
    .p2align 4
jm_emu_fiber_entry_x86:
    movq %r12, %rdi
    andq $-16, %rsp
    callq *%r13
    ud2
    .size jm_emu_fiber_entry_x86, .-jm_emu_fiber_entry_x86
    .popsection
)");
#endif

namespace jm {
namespace emu {
namespace detail {

// A fiber's entry point; it must never return (it switches away for good when its thread ends).
using FiberFn = void (*)(void*);

struct Fiber {
#if defined(JM_EMU_USE_UCONTEXT)
  ucontext_t uc;
#else
  void* sp = nullptr;
#endif
  char* stack = nullptr;  // usable stack [stack, stack + stack_size), guard page below
  size_t stack_size = 0;
#if defined(JM_EMU_TSAN)
  void* tsan = nullptr;
#endif

  Fiber() = default;
  Fiber(const Fiber&) = delete;
  Fiber& operator=(const Fiber&) = delete;
  ~Fiber() {
    if (stack == nullptr) return;  // a host thread's own context: nothing of ours to free
    munmap(stack - page_size(), stack_size + page_size());
#if defined(JM_EMU_TSAN)
    if (tsan != nullptr) __tsan_destroy_fiber(tsan);
#endif
  }

  static size_t page_size() {
    static const size_t size = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    return size;
  }

  // Allocate the stack (once); false if the memory is not there.
  bool allocate(size_t bytes) {
    if (stack != nullptr) return true;
    const size_t page = page_size();
    bytes = (bytes + page - 1) / page * page;
    void* base = mmap(nullptr, bytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                      -1, 0);
    if (base == MAP_FAILED) return false;
    mprotect(base, page, PROT_NONE);  // guard page: an overflow faults
    stack = static_cast<char*>(base) + page;
    stack_size = bytes;
#if defined(JM_EMU_TSAN)
    tsan = __tsan_create_fiber(0);
#endif
    return true;
  }

#if defined(JM_EMU_USE_UCONTEXT)
  static void ucontext_entry(unsigned hi, unsigned lo, unsigned fhi, unsigned flo) {
    const uintptr_t arg = (static_cast<uintptr_t>(hi) << 32) | lo;
    const uintptr_t fn = (static_cast<uintptr_t>(fhi) << 32) | flo;
    reinterpret_cast<FiberFn>(fn)(reinterpret_cast<void*>(arg));
    abort();  // unreachable: the entry function never returns
  }
#endif

  // Make the next switch to this fiber start fn(arg) on a fresh stack.
  void start(FiberFn fn, void* arg) {
#if defined(JM_EMU_USE_UCONTEXT)
    getcontext(&uc);
    uc.uc_stack.ss_sp = stack;
    uc.uc_stack.ss_size = stack_size;
    uc.uc_link = nullptr;
    const uintptr_t a = reinterpret_cast<uintptr_t>(arg);
    const uintptr_t f = reinterpret_cast<uintptr_t>(fn);
    makecontext(&uc, reinterpret_cast<void (*)()>(&Fiber::ucontext_entry), 4, static_cast<unsigned>(a >> 32),
                static_cast<unsigned>(a), static_cast<unsigned>(f >> 32), static_cast<unsigned>(f));
#else
    uintptr_t top = reinterpret_cast<uintptr_t>(stack + stack_size) & ~static_cast<uintptr_t>(15);
    uint64_t* frame = reinterpret_cast<uint64_t*>(top) - 9;
    uint32_t mxcsr = 0x1f80;
    uint16_t fpucw = 0x037f;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fpucw));
    frame[0] = mxcsr | (static_cast<uint64_t>(fpucw) << 32);
    frame[1] = 0;                                    // r15
    frame[2] = 0;                                    // r14
    frame[3] = reinterpret_cast<uint64_t>(fn);       // r13: called by the entry stub
    frame[4] = reinterpret_cast<uint64_t>(arg);      // r12: its argument
    frame[5] = 0;                                    // rbx
    frame[6] = 0;                                    // rbp
    frame[7] = reinterpret_cast<uint64_t>(&jm_emu_fiber_entry_x86);  // return address
    frame[8] = 0;
    sp = frame;
#endif
  }
};

// Switch from the running context (saved into `from`) to `to`.
inline void fiber_switch(Fiber& from, Fiber& to) {
#if defined(JM_EMU_TSAN)
  if (from.tsan == nullptr) from.tsan = __tsan_get_current_fiber();
  __tsan_switch_to_fiber(to.tsan, 0);
#endif
#if defined(JM_EMU_USE_UCONTEXT)
  swapcontext(&from.uc, &to.uc);
#else
  jm_emu_switch_x86(&from.sp, to.sp);
#endif
}

}  // namespace detail
}  // namespace emu
}  // namespace jm

#pragma GCC visibility pop
